"""The scheduler as a pure state machine: events in, commands out, no I/O."""

from __future__ import annotations

import operator
from typing import Any

import pytest

from beluga_flows import END, START, ErrorCode, Graph, NodeStatus
from beluga_flows.graph.scheduler import EvaluateRoute, Scheduler, StartNode


def noop(state: dict[str, Any]) -> None:
    return None


def plan_of(edges: list[tuple[str, str]], *, routes: Any = (), **options: Any) -> Any:
    g = Graph(**options)
    names = {n for e in edges for n in e if n not in (START, END)}
    for src, _, path_map in routes:
        names |= {src, *(t for t in path_map if t != END)}
    for name in sorted(names):
        g.add_node(name, noop)
    for src, dst in edges:
        g.add_edge(src, dst)
    for src, fn, path_map in routes:
        g.add_conditional_edges(src, fn, path_map)
    return g.compile().plan


def started(commands: list[Any]) -> list[str]:
    return [c.node for c in commands if isinstance(c, StartNode)]


def test_a_fast_branch_does_not_wait_for_a_slow_sibling() -> None:
    plan = plan_of([(START, "root"), ("root", "slow"), ("root", "fast"), ("fast", "fast2")])
    s = Scheduler(plan, {})
    assert started(s.start()) == ["root"]
    assert started(s.finished("root", None)) == ["slow", "fast"]
    assert started(s.finished("fast", None)) == ["fast2"]  # slow is still running
    assert s.running == ["slow", "fast2"]


def test_a_join_waits_for_all_its_predecessors() -> None:
    plan = plan_of([(START, "a"), (START, "b"), ("a", "join"), ("b", "join")])
    s = Scheduler(plan, {})
    assert started(s.start()) == ["a", "b"]
    assert started(s.finished("a", None)) == []
    assert started(s.finished("b", None)) == ["join"]


def test_max_workers_bounds_what_runs_at_once() -> None:
    plan = plan_of([(START, "a"), (START, "b"), (START, "c")], max_workers=2)
    s = Scheduler(plan, {})
    assert started(s.start()) == ["a", "b"]
    assert started(s.finished("b", None)) == ["c"]


def test_sequential_mode_follows_one_topological_order() -> None:
    plan = plan_of([(START, "b"), (START, "a"), ("a", "c"), ("b", "c"), ("c", "d")], parallel=False)
    order = []
    s = Scheduler(plan, {})
    commands = s.start()
    while commands:
        [cmd] = commands
        order.append(cmd.node)
        commands = s.finished(cmd.node, None)
    assert order == ["a", "b", "c", "d"]  # by topological index, ties by insertion
    assert s.done


def test_parallel_writers_of_one_key_conflict_unless_reduced() -> None:
    edges = [(START, "a"), (START, "b")]
    s = Scheduler(plan_of(edges), {})
    s.start()
    s.finished("a", {"k": 1})
    s.finished("b", {"k": 2})
    assert s.fatal is not None and s.fatal.code is ErrorCode.INVALID_STATE
    assert "'a'" in str(s.fatal) and "'b'" in str(s.fatal) and "'k'" in str(s.fatal)

    reduced = Scheduler(plan_of(edges, reducers={"k": operator.add}), {"k": 10})
    reduced.start()
    reduced.finished("a", {"k": 1})
    reduced.finished("b", {"k": 2})
    assert reduced.fatal is None and reduced.state == {"k": 13}


def test_sequential_writers_of_one_key_do_not_conflict() -> None:
    s = Scheduler(plan_of([(START, "a"), ("a", "b")]), {})
    s.start()
    s.finished("a", {"k": 1})
    s.finished("b", {"k": 2})
    assert s.fatal is None and s.state == {"k": 2}


def test_loops_are_bounded_by_max_iterations() -> None:
    plan = plan_of(
        [(START, "work")], routes=[("work", lambda s: "work", ["work"])], max_iterations=3
    )
    s = Scheduler(plan, {})
    commands = s.start()
    for _ in range(3):
        assert started(commands) == ["work"]
        [route] = s.finished("work", None)
        assert isinstance(route, EvaluateRoute)
        commands = s.routed("work", ["work"])
    assert commands == [] and s.fatal is not None
    assert s.fatal.code is ErrorCode.WORKFLOW_DEADLOCK and "'work'" in str(s.fatal)
    assert s.runs["work"] == 3 and s.done


def test_a_failure_blocks_its_dependants_and_not_the_rest() -> None:
    plan = plan_of([(START, "a"), ("a", "a2"), ("a2", "a3"), (START, "b"), ("b", "b2")])
    s = Scheduler(plan, {})
    s.start()
    assert started(s.failed("a", ValueError("x"))) == []
    assert started(s.finished("b", None)) == ["b2"]
    s.finished("b2", None)
    report = s.report()
    assert report["a"] is NodeStatus.FAILED
    assert report["a2"] is report["a3"] is NodeStatus.DEPENDENCY_FAILED
    assert report["b"] is report["b2"] is NodeStatus.COMPLETED
    assert s.done and isinstance(s.errors["a"], ValueError)


def test_a_join_after_a_branch_not_taken_still_runs() -> None:
    pick_left = [("pick", lambda s: "left", ["left", "right"])]
    plan = plan_of([(START, "pick"), ("left", "join"), ("right", "join")], routes=pick_left)
    s = Scheduler(plan, {})
    s.start()
    s.finished("pick", None)
    assert started(s.routed("pick", ["left"])) == ["left"]
    assert started(s.finished("left", None)) == ["join"]  # right can no longer run


def test_finish_points_end_the_run() -> None:
    plan = plan_of([(START, "a"), ("a", "b"), ("b", "c")])
    g_plan = plan.__class__(**{**plan.__dict__, "finish": frozenset({"b"})})
    s = Scheduler(g_plan, {})
    s.start()
    s.finished("a", None)
    assert started(s.finished("b", None)) == [] and s.done
    assert s.report()["c"] is NodeStatus.SKIPPED


def test_router_fan_out_starts_every_target() -> None:
    plan = plan_of([(START, "split")], routes=[("split", noop, ["x", "y", "z"])])
    s = Scheduler(plan, {})
    s.start()
    s.finished("split", {"items": 3})
    assert started(s.routed("split", ["x", "y", END])) == ["x", "y"]


@pytest.mark.parametrize("n", [10_000])
def test_long_graphs_schedule_in_one_pass(n: int) -> None:
    edges = [(START, "n0")] + [(f"n{i}", f"n{i + 1}") for i in range(n - 1)]
    s = Scheduler(plan_of(edges), {})
    commands = s.start()
    count = 0
    while commands:
        count += 1
        commands = s.finished(commands[0].node, {"i": count})
    assert count == n and s.state == {"i": n} and s.done
