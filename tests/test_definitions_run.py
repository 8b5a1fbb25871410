"""Declarative workflows at run time (API.md §6) on the local provider: data flow,
step types, dependencies, retries, timeouts, failure handling, rollback, SLA.

Ordering is proved with asyncio.Event, never with sleeps; a step that must be
cancelled awaits an Event that is never set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import beluga_flows as bf
from beluga_flows import ErrorCode, OrchestratorError

BOUND = 5.0  # seconds: no test here should come near it


def doc(*steps: dict[str, Any], **top: Any) -> bf.WorkflowDefinition:
    mapping = {"workflow_id": top.pop("workflow_id", "wf"), "steps": list(steps), **top}
    return bf.WorkflowDefinition.from_dict(mapping)


def step(step_id: str, action: str | None = None, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"step_id": step_id, **fields}
    if action is not None:
        out["action"] = action
    return out


def make(actions: dict[str, Any], **options: Any) -> bf.WorkflowEngine:
    return bf.WorkflowEngine(actions=actions, provider="local", **options)


async def run(
    eng: bf.WorkflowEngine,
    defn: bf.WorkflowDefinition,
    data: dict[str, Any] | None = None,
    **opts: Any,
) -> Any:
    return await asyncio.wait_for(
        eng.aexecute(defn, data or {}, execution_options=opts or None), BOUND
    )


def status(res: Any, step_id: str) -> str:
    return str(
        res.steps[step_id].value if hasattr(res.steps[step_id], "value") else res.steps[step_id]
    )


def reason(res: Any, step_id: str) -> str | None:
    return res.step_records[step_id].skipped_reason


def code(res: Any, step_id: str) -> str:
    err = res.step_records[step_id].error
    assert err is not None, f"{step_id} has no error"
    return str(getattr(err["code"], "value", err["code"]))


class Recorder:
    """Actions that record their calls (thread-safe: sync actions may run in threads)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.lock = threading.Lock()

    def add(self, name: str, arg: Any) -> None:
        with self.lock:
            self.calls.append((name, arg))

    def names(self) -> list[str]:
        return [n for n, _ in self.calls]

    def action(self, name: str, value: Any = None) -> Any:
        def fn(data: dict[str, Any]) -> Any:
            self.add(name, dict(data))
            return value if value is not None else f"{name}-out"

        fn.__name__ = name
        return fn

    def failing(self, name: str, exc: BaseException | None = None) -> Any:
        def fn(data: dict[str, Any]) -> Any:
            self.add(name, dict(data))
            raise exc if exc is not None else ValueError(f"{name} broke")

        fn.__name__ = name
        return fn


# ------------------------------------------------------------------ data flow


async def test_without_input_mapping_the_action_gets_the_whole_data() -> None:
    rec = Recorder()
    eng = make({"a": rec.action("a", {"k": 1}), "b": rec.action("b")})
    defn = doc(
        step("first", "a"),
        step("second", "b", dependencies=["first"]),
        global_variables={"region": "eu", "tier": "free"},
    )
    res = await run(eng, defn, {"tier": "gold", "customer": "c-1"})
    assert res.status == "completed"
    assert rec.calls[0] == ("a", {"region": "eu", "tier": "gold", "customer": "c-1"})
    assert rec.calls[1] == (
        "b",
        {"region": "eu", "tier": "gold", "customer": "c-1", "first": {"k": 1}},
    )
    assert res.result == {
        "region": "eu",
        "tier": "gold",
        "customer": "c-1",
        "first": {"k": 1},
        "second": "b-out",
    }


async def test_the_action_gets_a_copy_of_data() -> None:
    def vandal(data: dict[str, Any]) -> str:
        data["injected"] = True
        data.clear()
        return "done"

    res = await run(make({"vandal": vandal}), doc(step("v", "vandal")), {"keep": 1})
    assert res.result == {"keep": 1, "v": "done"}


async def test_input_mapping_passes_keyword_arguments() -> None:
    seen: list[dict[str, Any]] = []

    def greet(name: str, punct: str, count: int) -> str:
        seen.append({"name": name, "punct": punct, "count": count})
        return f"hello {name}{punct * count}"

    async def shout(text: str) -> str:
        return text.upper()

    defn = doc(
        step(
            "greet",
            "greet",
            input_mapping={"name": "customer.name", "punct": "'!'", "count": "n + 1"},
        ),
        step("shout", "shout", dependencies=["greet"], input_mapping={"text": "greet"}),
    )
    res = await run(
        make({"greet": greet, "shout": shout}), defn, {"customer": {"name": "ana"}, "n": 1}
    )
    assert seen == [{"name": "ana", "punct": "!", "count": 2}]
    assert res.result["greet"] == "hello ana!!"
    assert res.result["shout"] == "HELLO ANA!!"


async def test_output_mapping_binds_result() -> None:
    def price(data: dict[str, Any]) -> dict[str, Any]:
        return {"amount": 20, "currency": "EUR"}

    defn = doc(
        step(
            "calc",
            "price",
            output_mapping={"total": "result.amount * qty", "label": "result.currency + '-' + sku"},
        )
    )
    res = await run(make({"price": price}), defn, {"qty": 3, "sku": "X1"})
    assert res.status == "completed"
    assert res.result["total"] == 60
    assert res.result["label"] == "EUR-X1"


async def test_output_mapping_replaces_the_default_key() -> None:
    defn = doc(step("calc", "f", output_mapping={"v": "result"}))
    res = await run(make({"f": lambda data: 7}), defn)
    assert res.result == {"v": 7}


async def test_input_is_the_original_input_and_steps_reports_status() -> None:
    seen: list[Any] = []

    def bump(x: int) -> int:
        return x + 10

    def look(now: int, original: int, st: str, attempts: int) -> None:
        seen.append((now, original, st, attempts))

    defn = doc(
        step("bump", "bump", input_mapping={"x": "x"}, output_mapping={"x": "result"}),
        step(
            "look",
            "look",
            dependencies=["bump"],
            input_mapping={
                "now": "x",
                "original": "input.x",
                "st": "steps.bump.status",
                "attempts": "steps.bump.attempts",
            },
        ),
    )
    res = await run(make({"bump": bump, "look": look}), defn, {"x": 1})
    assert res.status == "completed"
    assert seen == [(11, 1, "completed", 1)]


async def test_data_variable_is_the_whole_mapping() -> None:
    got: list[Any] = []
    defn = doc(step("s", "f", input_mapping={"n": "size(data)", "v": "data.a"}))
    await run(make({"f": lambda n, v: got.append((n, v))}), defn, {"a": 5, "b": 6})
    assert got == [(2, 5)]


async def test_conditions_guard_a_step() -> None:
    rec = Recorder()
    eng = make({"big": rec.action("big"), "small": rec.action("small")})
    defn = doc(
        step("big", "big", conditions=["amount > 100", "currency == 'EUR'"]),
        step("small", "small", conditions=["amount <= 100"]),
    )
    res = await run(eng, defn, {"amount": 50, "currency": "EUR"})
    assert res.status == "completed"
    assert rec.names() == ["small"]
    assert status(res, "big") == "skipped" and reason(res, "big") == "condition_false"
    assert status(res, "small") == "completed" and reason(res, "small") is None
    assert "big" not in res.result

    res = await run(eng, defn, {"amount": 500, "currency": "USD"})  # one guard false is enough
    assert status(res, "big") == "skipped" and reason(res, "big") == "condition_false"


async def test_all_dependencies_skipped_skips_the_step() -> None:
    rec = Recorder()
    eng = make(
        {"a": rec.action("a"), "b": rec.action("b"), "c": rec.action("c"), "d": rec.action("d")}
    )
    defn = doc(
        step("a", "a", conditions=["false"]),
        step("b", "b"),
        step("after_a", "c", dependencies=["a"]),
        step("after_both", "d", dependencies=["a", "b"]),
        step("after_after", "c", dependencies=["after_a"]),
    )
    res = await run(eng, defn)
    assert res.status == "completed"
    assert reason(res, "after_a") == "dependencies_skipped"
    assert reason(res, "after_after") == "dependencies_skipped"
    assert status(res, "after_both") == "completed"  # one completed, none failed: runs
    assert sorted(rec.names()) == ["b", "d"]


# ------------------------------------------------------------------ conditional


def _routing() -> bf.WorkflowDefinition:
    return doc(
        {
            "step_id": "route",
            "type": "conditional",
            "conditions": [
                {"if": "amount > 100", "then": ["big"]},
                {"if": "amount > 10", "then": ["mid", "mid2"]},
                {"else": ["small"]},
            ],
        },
        step("big", "big"),
        step("mid", "mid"),
        step("mid2", "mid", dependencies=["route"]),
        step("small", "small"),
        step("after_big", "big", dependencies=["big"]),
        step("join", "join", dependencies=["big", "mid", "small"]),
    )


async def test_conditional_takes_the_first_true_branch() -> None:
    rec = Recorder()
    acts = {n: rec.action(n) for n in ("big", "mid", "small", "join")}
    eng = make(acts)
    res = await run(eng, _routing(), {"amount": 50})
    assert res.status == "completed"
    assert res.result["route"] == {"branch": 1, "next": ["mid", "mid2"]}
    assert status(res, "route") == "completed"
    for sid in ("mid", "mid2", "join"):
        assert status(res, sid) == "completed", sid
    for sid in ("big", "small"):
        assert status(res, sid) == "skipped" and reason(res, sid) == "branch_not_taken"
    assert reason(res, "after_big") == "dependencies_skipped"
    assert sorted(rec.names()) == ["join", "mid", "mid"]

    rec.calls.clear()
    res = await run(eng, _routing(), {"amount": 500})  # both ifs true: the first wins
    assert res.result["route"] == {"branch": 0, "next": ["big"]}
    assert sorted(rec.names()) == ["big", "big", "join"]
    assert reason(res, "mid") == "branch_not_taken" and reason(res, "small") == "branch_not_taken"


async def test_conditional_else_branch() -> None:
    rec = Recorder()
    eng = make({n: rec.action(n) for n in ("big", "mid", "small", "join")})
    res = await run(eng, _routing(), {"amount": 1})
    assert res.result["route"] == {"branch": "else", "next": ["small"]}
    assert status(res, "small") == "completed"
    for sid in ("big", "mid", "mid2"):
        assert reason(res, sid) == "branch_not_taken"
    assert sorted(rec.names()) == ["join", "small"]


async def test_conditional_without_else_and_no_true_branch() -> None:
    rec = Recorder()
    defn = doc(
        {"step_id": "route", "type": "conditional", "conditions": [{"if": "false", "then": ["x"]}]},
        step("x", "x"),
        step("y", "y"),
    )
    res = await run(make({"x": rec.action("x"), "y": rec.action("y")}), defn)
    assert res.status == "completed"
    assert reason(res, "x") == "branch_not_taken"
    assert rec.names() == ["y"]


# ------------------------------------------------------------------ parallel


async def test_static_parallel_output_shape() -> None:
    async def one(data: dict[str, Any]) -> int:
        return 1

    def two(data: dict[str, Any]) -> int:
        return 2

    defn = doc(
        {
            "step_id": "fan",
            "type": "parallel",
            "parallel_steps": [step("p1", "one"), step("p2", "two")],
        },
        step("after", "one", dependencies=["fan"]),
    )
    res = await run(make({"one": one, "two": two}), defn)
    assert res.status == "completed"
    assert res.result["fan"] == {
        "total_steps": 2,
        "successful_steps": 2,
        "failed_steps": 0,
        "success_rate": 1.0,
        "results": {"p1": 1, "p2": 2},
        "failures": [],
    }
    assert status(res, "p1") == "completed" and status(res, "p2") == "completed"
    assert status(res, "fan") == "completed" and status(res, "after") == "completed"


async def test_for_each_binds_item_and_index() -> None:
    seen: list[tuple[Any, int]] = []

    def square(x: int, i: int) -> int:
        seen.append((x, i))
        return x * x

    defn = doc(
        {
            "step_id": "each",
            "type": "parallel",
            "for_each": "items",
            "parallel_steps": [step("sq", "square", input_mapping={"x": "item", "i": "index"})],
        }
    )
    res = await run(make({"square": square}), defn, {"items": [3, 4, 5]})
    assert res.status == "completed"
    assert sorted(seen) == [(3, 0), (4, 1), (5, 2)]
    out = res.result["each"]
    assert out["results"] == {"sq[0]": 9, "sq[1]": 16, "sq[2]": 25}
    assert out["total_steps"] == 3 and out["successful_steps"] == 3
    for i in range(3):
        assert status(res, f"sq[{i}]") == "completed"
        assert res.step_records[f"sq[{i}]"].attempts == 1


async def test_for_each_over_an_empty_list() -> None:
    defn = doc(
        {
            "step_id": "each",
            "type": "parallel",
            "for_each": "items",
            "parallel_steps": [step("k", "f")],
        }
    )
    res = await run(make({"f": lambda data: 1}), defn, {"items": []})
    assert res.result["each"]["total_steps"] == 0
    assert res.result["each"]["results"] == {}


def _fan(threshold: float, **extra: Any) -> bf.WorkflowDefinition:
    return doc(
        {
            "step_id": "fan",
            "type": "parallel",
            "parallel_failure_threshold": threshold,
            "parallel_steps": [step("ok1", "ok"), step("ok2", "ok"), step("bad", "bad")],
            **extra,
        },
        step("after", "ok", dependencies=["fan"]),
    )


async def test_parallel_passes_at_the_threshold() -> None:
    rec = Recorder()
    eng = make({"ok": rec.action("ok", 1), "bad": rec.failing("bad")})
    res = await run(eng, _fan(0.5))
    assert res.status == "completed"
    out = res.result["fan"]
    assert out["total_steps"] == 3 and out["successful_steps"] == 2 and out["failed_steps"] == 1
    assert out["success_rate"] == pytest.approx(2 / 3)
    assert out["results"] == {"ok1": 1, "ok2": 1}
    assert len(out["failures"]) == 1
    failure = out["failures"][0]
    assert failure["step_id"] == "bad" and failure["code"] == "execution_failed"
    assert "bad broke" in failure["message"]
    assert status(res, "bad") == "failed" and status(res, "fan") == "completed"
    assert status(res, "after") == "completed"


async def test_parallel_threshold_is_inclusive() -> None:
    rec = Recorder()
    eng = make({"ok": rec.action("ok", 1), "bad": rec.failing("bad")})
    defn = doc(
        {
            "step_id": "fan",
            "type": "parallel",
            "parallel_failure_threshold": 0.5,
            "parallel_steps": [step("ok1", "ok"), step("bad", "bad")],
        }
    )
    res = await run(eng, defn)
    assert res.status == "completed" and status(res, "fan") == "completed"


async def test_parallel_below_threshold_fails() -> None:
    rec = Recorder()
    eng = make({"ok": rec.action("ok", 1), "bad": rec.failing("bad")})
    res = await run(eng, _fan(0.9))
    assert res.status == "failed"
    assert status(res, "fan") == "failed" and code(res, "fan") == "execution_failed"
    assert any(e["step_id"] == "fan" and e["code"] == "execution_failed" for e in res.errors)
    assert status(res, "after") != "completed"


async def test_cancel_remaining_decides_on_enough_successes() -> None:
    never = asyncio.Event()
    straggler_started = asyncio.Event()
    cancelled: list[str] = []

    async def fast(data: dict[str, Any]) -> str:
        await straggler_started.wait()  # the straggler is surely running
        return "fast"

    async def slow(data: dict[str, Any]) -> str:
        straggler_started.set()
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append("slow")
            raise
        return "slow"

    defn = doc(
        {
            "step_id": "fan",
            "type": "parallel",
            "parallel_failure_threshold": 0.5,
            "cancel_remaining": True,
            "parallel_steps": [step("f1", "fast"), step("f2", "fast"), step("straggler", "slow")],
        }
    )
    res = await run(make({"fast": fast, "slow": slow}), defn)
    assert res.status == "completed"
    assert status(res, "fan") == "completed"
    assert status(res, "straggler") == "cancelled"
    assert res.steps["straggler"] == bf.StepStatus.CANCELLED
    assert cancelled == ["slow"]
    out = res.result["fan"]
    assert out["total_steps"] == 3 and out["successful_steps"] == 2
    assert set(out["results"]) == {"f1", "f2"}


async def test_cancel_remaining_decides_on_too_many_failures() -> None:
    never = asyncio.Event()
    cancelled: list[str] = []
    started = asyncio.Event()
    running: list[str] = []

    async def slow(data: dict[str, Any]) -> str:
        running.append("slow")
        if len(running) == 2:
            started.set()
        try:
            await never.wait()
        finally:
            cancelled.append("slow")
        return "slow"

    async def bad(data: dict[str, Any]) -> str:
        await started.wait()
        raise ValueError("nope")

    defn = doc(
        {
            "step_id": "fan",
            "type": "parallel",
            "parallel_failure_threshold": 1.0,
            "cancel_remaining": True,
            "parallel_steps": [step("s1", "slow"), step("s2", "slow"), step("b", "bad")],
        }
    )
    res = await run(make({"slow": slow, "bad": bad}), defn)
    assert res.status == "failed"
    assert status(res, "fan") == "failed" and code(res, "fan") == "execution_failed"
    assert status(res, "s1") == "cancelled" and status(res, "s2") == "cancelled"
    assert sorted(cancelled) == ["slow", "slow"]


async def test_without_cancel_remaining_every_child_finishes() -> None:
    gate = asyncio.Event()
    done: list[str] = []

    async def fast(data: dict[str, Any]) -> str:
        done.append("fast")
        if len(done) == 2:
            gate.set()
        return "fast"

    async def slow(data: dict[str, Any]) -> str:
        await gate.wait()
        done.append("slow")
        return "slow"

    defn = doc(
        {
            "step_id": "fan",
            "type": "parallel",
            "parallel_steps": [step("f1", "fast"), step("f2", "fast"), step("s", "slow")],
        }
    )
    res = await run(make({"fast": fast, "slow": slow}), defn)
    assert status(res, "s") == "completed"
    assert res.result["fan"]["results"]["s"] == "slow"


@pytest.mark.parametrize(("given", "bound"), [(2, 2), (None, 10)])  # None: the default
async def test_max_parallel_steps_bounds_concurrency(given: int | None, bound: int) -> None:
    active = 0
    peak = 0
    all_running = asyncio.Event()

    async def work(x: int) -> int:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        if active >= bound:
            all_running.set()
        await all_running.wait()
        for _ in range(5):
            await asyncio.sleep(0)
        active -= 1
        return x

    limit = {} if given is None else {"max_parallel_steps": given}
    defn = doc(
        {
            "step_id": "each",
            "type": "parallel",
            "for_each": "items",
            "parallel_steps": [step("w", "work", input_mapping={"x": "item"})],
        },
        **limit,
    )
    res = await run(make({"work": work}), defn, {"items": list(range(3 * bound + 1))})
    assert res.status == "completed"
    assert peak == bound
    assert res.result["each"]["successful_steps"] == 3 * bound + 1


# ------------------------------------------------------------------ loop


async def test_loop_runs_while_its_condition_holds() -> None:
    seen: list[tuple[int, int]] = []

    def inc(n: int, i: int) -> int:
        seen.append((n, i))
        return n + 1

    defn = doc(
        step(
            "count",
            "inc",
            type="loop",
            input_mapping={"n": "counter", "i": "iteration"},
            output_mapping={"counter": "result"},
            loop_condition="counter < 5",
        ),
        step("after", "inc", dependencies=["count"], input_mapping={"n": "counter", "i": "0"}),
        global_variables={"counter": 0},
    )
    res = await run(make({"inc": inc}), defn)
    assert res.status == "completed"
    assert seen[:5] == [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)]
    assert seen[5] == (5, 0)
    assert res.result["counter"] == 5
    assert res.step_records["count"].iterations == 5
    assert status(res, "count") == "completed"


async def test_loop_condition_false_at_once_runs_nothing() -> None:
    calls: list[int] = []
    defn = doc(step("spin", "f", type="loop", loop_condition="false"))
    res = await run(make({"f": lambda data: calls.append(1)}), defn)
    assert res.status == "completed"
    assert calls == []
    assert res.step_records["spin"].iterations == 0


async def test_loop_past_its_maximum_fails_with_deadlock() -> None:
    calls: list[int] = []
    defn = doc(step("spin", "f", type="loop", loop_condition="true", loop_max_iterations=3))
    res = await run(make({"f": lambda data: calls.append(1)}), defn)
    assert res.status == "failed"
    assert len(calls) == 3
    assert status(res, "spin") == "failed" and code(res, "spin") == "workflow_deadlock"
    err = next(e for e in res.errors if e["step_id"] == "spin")
    assert err["code"] == "workflow_deadlock" and "spin" in err["message"]
    assert res.step_records["spin"].iterations == 3


async def test_loop_past_its_maximum_can_continue() -> None:
    calls: list[int] = []
    defn = doc(
        step(
            "spin",
            "f",
            type="loop",
            loop_condition="iteration >= 0",
            loop_max_iterations=4,
            on_max_iterations="continue",
        ),
        step("after", "g", dependencies=["spin"]),
    )
    res = await run(make({"f": lambda data: calls.append(1), "g": lambda data: "g"}), defn)
    assert res.status == "completed"
    assert len(calls) == 4
    assert status(res, "spin") == "completed" and status(res, "after") == "completed"
    assert res.step_records["spin"].iterations == 4


# ------------------------------------------------------------------ approval


def _approval(**fields: Any) -> bf.WorkflowDefinition:
    return doc(
        step("prep", "prep"),
        {
            "step_id": "ok",
            "type": "approval",
            "prompt": "Ship it?",
            "dependencies": ["prep"],
            **fields,
        },
        step("ship", "ship", dependencies=["ok"]),
    )


async def test_preset_approval_approves() -> None:
    rec = Recorder()
    eng = make({"prep": rec.action("prep"), "ship": rec.action("ship")})
    answer = {"approved": True, "reviewer": "ann", "comment": "fine"}
    res = await run(eng, _approval(), approvals={"ok": answer})
    assert res.status == "completed"
    assert res.result["ok"] == answer
    assert status(res, "ok") == "completed"
    assert rec.names() == ["prep", "ship"]
    assert rec.calls[1][1]["ok"] == answer


async def test_preset_rejection_fails_with_invalid_state() -> None:
    rec = Recorder()
    eng = make({"prep": rec.action("prep"), "ship": rec.action("ship")})
    res = await run(
        eng, _approval(), approvals={"ok": {"approved": False, "reviewer": "bo", "comment": "no"}}
    )
    assert res.status == "failed"
    assert status(res, "ok") == "failed" and code(res, "ok") == "invalid_state"
    assert rec.names() == ["prep"]


async def test_rejection_with_continue_on_failure_goes_on() -> None:
    rec = Recorder()
    eng = make(
        {"prep": rec.action("prep"), "ship": rec.action("ship"), "other": rec.action("other")}
    )
    defn = doc(
        step("prep", "prep"),
        {
            "step_id": "ok",
            "type": "approval",
            "dependencies": ["prep"],
            "continue_on_failure": True,
        },
        step("other", "other", dependencies=["prep"]),
    )
    res = await run(
        eng, defn, approvals={"ok": {"approved": False, "reviewer": "bo", "comment": "no"}}
    )
    assert res.status == "completed"
    assert res.result["ok"]["approved"] is False
    assert res.result["ok"]["reviewer"] == "bo"
    assert sorted(rec.names()) == ["other", "prep"]


async def test_waiting_approval_is_answered_by_a_signal() -> None:
    reached = asyncio.Event()

    async def prep(data: dict[str, Any]) -> str:
        reached.set()
        return "ready"

    shipped: list[Any] = []
    eng = make({"prep": prep, "ship": lambda data: shipped.append(data["ok"])})
    task = asyncio.create_task(run(eng, _approval(timeout=4), execution_id="exec-signal-1"))
    await asyncio.wait_for(reached.wait(), BOUND)
    answer = {"approved": True, "reviewer": "bob", "comment": "lgtm"}
    await eng.asignal("exec-signal-1", "approval", answer)
    res = await task
    assert res.execution_id == "exec-signal-1"
    assert res.status == "completed"
    assert res.result["ok"] == answer
    assert shipped == [answer]


async def test_waiting_approval_rejected_by_a_signal() -> None:
    reached = asyncio.Event()

    async def prep(data: dict[str, Any]) -> str:
        reached.set()
        return "ready"

    eng = make({"prep": prep, "ship": lambda data: "shipped"})
    task = asyncio.create_task(run(eng, _approval(timeout=4), execution_id="exec-signal-2"))
    await asyncio.wait_for(reached.wait(), BOUND)
    await eng.asignal(
        "exec-signal-2", "approval", {"approved": False, "reviewer": "eve", "comment": "no"}
    )
    res = await task
    assert res.status == "failed" and code(res, "ok") == "invalid_state"
    assert "ship" not in res.result


def test_sync_signal_from_another_thread() -> None:
    reached = threading.Event()

    def prep(data: dict[str, Any]) -> str:
        reached.set()
        return "ready"

    eng = make({"prep": prep, "ship": lambda data: "shipped"})
    errors: list[BaseException] = []

    def reviewer() -> None:
        try:
            assert reached.wait(BOUND)
            eng.signal(
                "exec-sync-1", "approval", {"approved": True, "reviewer": "t", "comment": None}
            )
        except BaseException as err:  # surfaced below
            errors.append(err)

    thread = threading.Thread(target=reviewer, daemon=True)
    thread.start()
    res = eng.execute(_approval(timeout=4), {}, execution_options={"execution_id": "exec-sync-1"})
    thread.join(BOUND)
    assert errors == []
    assert res.status == "completed"
    assert res.result["ok"]["approved"] is True and res.result["ship"] == "shipped"


@pytest.mark.parametrize(
    ("decision", "run_status", "err_code"),
    [
        ("approve", "completed", None),
        ("reject", "failed", "invalid_state"),
        ("fail", "failed", "timeout"),
    ],
)
async def test_approval_timeout_applies_on_timeout(
    decision: str, run_status: str, err_code: str | None
) -> None:
    rec = Recorder()
    eng = make({"prep": rec.action("prep"), "ship": rec.action("ship")})
    start = time.monotonic()
    res = await run(eng, _approval(timeout=0.2, on_timeout=decision))
    assert time.monotonic() - start < 3
    assert res.status == run_status
    if err_code is None:
        assert res.result["ok"]["approved"] is True
        assert status(res, "ok") == "completed" and "ship" in rec.names()
    else:
        assert status(res, "ok") == "failed" and code(res, "ok") == err_code
        assert "ship" not in rec.names()


async def test_approval_default_on_timeout_is_fail() -> None:
    res = await run(make({"prep": lambda d: 1, "ship": lambda d: 2}), _approval(timeout=0.15))
    assert res.status == "failed" and code(res, "ok") == "timeout"


# ------------------------------------------------------------------ retries


class Flaky:
    def __init__(self, failures: int, exc: Any = ConnectionError) -> None:
        self.failures = failures
        self.exc = exc
        self.calls = 0

    def __call__(self, data: dict[str, Any]) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc(f"flaky #{self.calls}") if isinstance(self.exc, type) else self.exc
        return "ok"


FAST = {"initial_delay": 0, "jitter": 0}


async def test_step_retry_policy_retries_transient_errors() -> None:
    flaky = Flaky(2)
    defn = doc(step("s", "flaky", retry_policy={"max_attempts": 3, **FAST}))
    res = await run(make({"flaky": flaky}), defn)
    assert res.status == "completed"
    assert flaky.calls == 3
    assert res.step_records["s"].attempts == 3
    assert res.result["s"] == "ok"


async def test_workflow_retry_policy_is_the_default() -> None:
    flaky = Flaky(1)
    defn = doc(step("s", "flaky"), retry_policy={"max_attempts": 2, **FAST})
    res = await run(make({"flaky": flaky}), defn)
    assert res.status == "completed" and flaky.calls == 2
    assert res.step_records["s"].attempts == 2


async def test_step_retry_policy_overrides_the_workflow_one() -> None:
    flaky = Flaky(10)
    defn = doc(
        step("s", "flaky", retry_policy={"max_attempts": 2, **FAST}),
        retry_policy={"max_attempts": 5, **FAST},
    )
    res = await run(make({"flaky": flaky}), defn)
    assert res.status == "failed" and flaky.calls == 2
    assert res.step_records["s"].attempts == 2


async def test_no_retry_policy_means_one_attempt() -> None:
    flaky = Flaky(1)
    res = await run(make({"flaky": flaky}), doc(step("s", "flaky")))
    assert res.status == "failed" and flaky.calls == 1


async def test_retries_exhausted_fail_the_step() -> None:
    flaky = Flaky(99)
    defn = doc(step("s", "flaky", retry_policy={"max_attempts": 3, **FAST}))
    res = await run(make({"flaky": flaky}), defn)
    assert res.status == "failed"
    assert flaky.calls == 3 and res.step_records["s"].attempts == 3
    assert "flaky #3" in res.step_records["s"].error["message"]


async def test_plain_exception_is_execution_failed_and_not_retried() -> None:
    flaky = Flaky(1, ValueError)
    defn = doc(step("s", "flaky", retry_policy={"max_attempts": 3, **FAST}))
    res = await run(make({"flaky": flaky}), defn)
    assert res.status == "failed"
    assert flaky.calls == 1
    assert code(res, "s") == "execution_failed"
    assert "flaky #1" in res.step_records["s"].error["message"]


async def test_non_retryable_code_is_not_retried() -> None:
    flaky = Flaky(1, OrchestratorError("check", "bad input", ErrorCode.INVALID_INPUT))
    defn = doc(step("s", "flaky", retry_policy={"max_attempts": 3, **FAST}))
    res = await run(make({"flaky": flaky}), defn)
    assert res.status == "failed" and flaky.calls == 1
    assert code(res, "s") == "invalid_input"
    assert res.errors[0]["step_id"] == "s" and res.errors[0]["code"] == "invalid_input"


async def test_transient_codes_and_timeout_errors_are_retried_by_default() -> None:
    coded = Flaky(1, OrchestratorError("pool", "busy", ErrorCode.RESOURCE_EXHAUSTED))
    plain = Flaky(1, TimeoutError)
    for flaky in (coded, plain):
        defn = doc(step("s", "flaky", retry_policy={"max_attempts": 2, **FAST}))
        res = await run(make({"flaky": flaky}), defn)
        assert res.status == "completed" and flaky.calls == 2


async def test_retry_on_lists_the_codes_to_retry() -> None:
    flaky = Flaky(2, ValueError)
    defn = doc(
        step(
            "s", "flaky", retry_policy={"max_attempts": 3, "retry_on": ["execution_failed"], **FAST}
        )
    )
    res = await run(make({"flaky": flaky}), defn)
    assert res.status == "completed" and flaky.calls == 3

    coded = Flaky(1, OrchestratorError("check", "bad input", ErrorCode.INVALID_INPUT))
    defn = doc(
        step("s", "flaky", retry_policy={"max_attempts": 3, "retry_on": ["invalid_input"], **FAST})
    )
    res = await run(make({"flaky": coded}), defn)
    assert res.status == "completed" and coded.calls == 2


async def test_retry_on_retries_only_what_it_lists() -> None:
    flaky = Flaky(5, ConnectionError)  # retryable by default, but not listed
    defn = doc(
        step("s", "flaky", retry_policy={"max_attempts": 3, "retry_on": ["invalid_input"], **FAST})
    )
    res = await run(make({"flaky": flaky}), defn)
    assert res.status == "failed" and flaky.calls == 1


async def test_a_step_keeps_its_own_policies() -> None:
    calls = 0

    @bf.step(retry_policy=bf.RetryPolicy(max_attempts=3, initial_delay=0, jitter=0), track=False)
    def stepped(data: dict[str, Any]) -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("transient")
        return "stepped"

    res = await run(make({"stepped": stepped}), doc(step("s", "stepped")))
    assert res.status == "completed" and calls == 3
    assert res.result["s"] == "stepped"


async def test_step_timeout_is_timeout_and_cancels_the_coroutine() -> None:
    never = asyncio.Event()
    cancelled: list[bool] = []

    async def hang(data: dict[str, Any]) -> None:
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    res = await run(make({"hang": hang}), doc(step("h", "hang", timeout=0.1)))
    assert res.status == "failed"
    assert status(res, "h") == "failed" and code(res, "h") == "timeout"
    assert cancelled == [True]
    assert any(e["step_id"] == "h" and e["code"] == "timeout" for e in res.errors)


# ------------------------------------------------------------------ error handlers


async def test_error_handler_recovers_the_step() -> None:
    handled: list[dict[str, Any]] = []
    rec = Recorder()

    def refuse(ctx: dict[str, Any]) -> Any:
        handled.append({"who": "refuse", **ctx})
        raise RuntimeError("cannot handle")

    def fix(ctx: dict[str, Any]) -> Any:
        handled.append({"who": "fix", **ctx})
        return {"fallback": True}

    def never(ctx: dict[str, Any]) -> Any:
        handled.append({"who": "never"})
        return "too late"

    eng = make(
        {
            "boom": rec.failing("boom"),
            "refuse": refuse,
            "fix": fix,
            "never": never,
            "next": rec.action("next"),
        }
    )
    defn = doc(
        step("risky", "boom", error_handlers=["refuse", "fix", "never"]),
        step("next", "next", dependencies=["risky"]),
    )
    res = await run(eng, defn, {"k": 1})
    assert res.status == "completed"
    assert [h["who"] for h in handled] == ["refuse", "fix"]
    ctx = handled[1]
    assert ctx["k"] == 1
    assert ctx["error"]["step_id"] == "risky"
    assert ctx["error"]["code"] == "execution_failed"
    assert "boom broke" in ctx["error"]["message"]
    record = res.step_records["risky"]
    assert status(res, "risky") == "failed" and record.recovered is True
    assert res.result["risky"] == {"fallback": True}
    assert status(res, "next") == "completed"
    assert rec.calls[-1] == ("next", {"k": 1, "risky": {"fallback": True}})
    assert res.rollback_performed is False


async def test_error_handlers_that_all_raise_do_not_recover() -> None:
    def refuse(ctx: dict[str, Any]) -> Any:
        raise RuntimeError("no")

    rec = Recorder()
    eng = make({"boom": rec.failing("boom"), "refuse": refuse, "next": rec.action("next")})
    defn = doc(
        step("risky", "boom", error_handlers=["refuse"]),
        step("next", "next", dependencies=["risky"]),
    )
    res = await run(eng, defn)
    assert res.status == "failed"
    assert res.step_records["risky"].recovered is False
    assert "next" not in rec.names()


# ------------------------------------------------------------------ continue_on_failure


async def test_continue_on_failure_skips_dependents_and_completes() -> None:
    rec = Recorder()
    eng = make({"boom": rec.failing("boom"), "ok": rec.action("ok")})
    defn = doc(
        step("fragile", "boom", continue_on_failure=True),
        step("solid", "ok"),
        step("child", "ok", dependencies=["fragile"]),
        step("mixed", "ok", dependencies=["fragile", "solid"]),
        step("grandchild", "ok", dependencies=["child"]),
        step("free", "ok", dependencies=["solid"]),
    )
    res = await run(eng, defn)
    assert res.status == "completed"
    assert status(res, "fragile") == "failed" and code(res, "fragile") == "execution_failed"
    assert res.step_records["fragile"].recovered is False
    assert status(res, "child") == "skipped" and reason(res, "child") == "dependency_failed"
    assert status(res, "mixed") == "skipped" and reason(res, "mixed") == "dependency_failed"
    assert (
        status(res, "grandchild") == "skipped"
        and reason(res, "grandchild") == "dependencies_skipped"
    )
    assert status(res, "free") == "completed"
    assert rec.names().count("ok") == 2  # solid, free
    assert any(e["step_id"] == "fragile" for e in res.errors)
    assert res.rollback_performed is False


# ------------------------------------------------------------------ failure and rollback


async def test_failure_cancels_running_steps_and_rolls_back_in_reverse_completion_order() -> None:
    never = asyncio.Event()
    q_done = asyncio.Event()
    slow_started = asyncio.Event()
    undo: list[tuple[str, dict[str, Any]]] = []
    started: list[str] = []
    cancelled: list[str] = []

    async def p(data: dict[str, Any]) -> str:  # defined first, completes second
        started.append("p")
        await q_done.wait()  # set by a step that starts only once q has completed
        return "p"

    async def q(data: dict[str, Any]) -> str:
        started.append("q")
        return "q"

    async def after_q(data: dict[str, Any]) -> str:
        q_done.set()
        return "after_q"

    async def slow(data: dict[str, Any]) -> str:
        started.append("slow")
        slow_started.set()
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append("slow")
            raise
        return "slow"

    async def boom(data: dict[str, Any]) -> str:
        started.append("boom")
        await slow_started.wait()
        raise ValueError("kaboom")

    def after(data: dict[str, Any]) -> str:
        started.append("after")
        return "after"

    def undoer(name: str) -> Any:
        def fn(data: dict[str, Any]) -> None:
            undo.append((name, dict(data)))

        return fn

    eng = make(
        {
            "p": p,
            "q": q,
            "after_q": after_q,
            "slow": slow,
            "boom": boom,
            "after": after,
            "undo_p": undoer("p"),
            "undo_q": undoer("q"),
            "undo_slow": undoer("slow"),
            "undo_boom": undoer("boom"),
        }
    )
    defn = doc(
        step("p", "p", rollback_actions=["undo_p"]),
        step("q", "q", rollback_actions=["undo_q"]),
        step("after_q", "after_q", dependencies=["q"]),
        step("slow", "slow", rollback_actions=["undo_slow"]),
        step("boom", "boom", dependencies=["p", "q"], rollback_actions=["undo_boom"]),
        step("after_slow", "after", dependencies=["slow"]),
    )
    res = await run(eng, defn, {"k": "v"})
    assert res.status == "failed"
    assert code(res, "boom") == "execution_failed"
    assert status(res, "slow") == "cancelled" and cancelled == ["slow"]
    assert "after" not in started and status(res, "after_slow") not in ("completed", "running")
    assert [n for n, _ in undo] == ["p", "q"]  # reverse of completion order q, p
    assert res.rolled_back == ["p", "q"]
    assert res.rollback_performed is True
    for _, data in undo:
        assert data["k"] == "v" and data["p"] == "p" and data["q"] == "q"


async def test_a_failing_rollback_is_recorded_and_the_others_still_run() -> None:
    undone: list[str] = []

    def undo_b(data: dict[str, Any]) -> None:
        undone.append("b")
        raise RuntimeError("undo b failed")

    defn = doc(
        step("a", "ok", rollback_actions=["undo_a"]),
        step("b", "ok", dependencies=["a"], rollback_actions=["undo_b"]),
        step("c", "ok", dependencies=["b"], rollback_actions=["undo_c"]),
        step("d", "boom", dependencies=["c"]),
    )
    eng = make(
        {
            "ok": lambda data: "ok",
            "boom": Recorder().failing("boom"),
            "undo_a": lambda data: undone.append("a"),
            "undo_b": undo_b,
            "undo_c": lambda data: undone.append("c"),
        }
    )
    res = await run(eng, defn)
    assert res.status == "failed"
    assert undone == ["c", "b", "a"]  # each once, reverse completion order
    assert res.rollback_performed is True
    assert res.rolled_back[0] == "c" and res.rolled_back[-1] == "a"
    assert any(e["step_id"] == "d" and e["code"] == "execution_failed" for e in res.errors)
    assert any("undo b failed" in e["message"] for e in res.errors), res.errors


async def test_a_step_completed_without_rollback_actions_is_not_rolled_back() -> None:
    undone: list[str] = []
    defn = doc(
        step("a", "ok", rollback_actions=["undo_a"]),
        step("b", "ok", dependencies=["a"]),
        step("c", "boom", dependencies=["b"]),
    )
    eng = make(
        {
            "ok": lambda d: 1,
            "boom": Recorder().failing("boom"),
            "undo_a": lambda d: undone.append("a"),
        }
    )
    res = await run(eng, defn)
    assert undone == ["a"]
    assert res.rolled_back == ["a"]


async def test_workflow_timeout_rolls_back() -> None:
    never = asyncio.Event()
    undone: list[str] = []

    async def hang(data: dict[str, Any]) -> None:
        await never.wait()

    defn = doc(
        step("a", "ok", rollback_actions=["undo_a"]),
        step("h", "hang", dependencies=["a"]),
        timeout=0.3,
    )
    eng = make({"ok": lambda d: "ok", "hang": hang, "undo_a": lambda d: undone.append("a")})
    start = time.monotonic()
    res = await run(eng, defn)
    assert time.monotonic() - start < 3
    assert res.status == "timeout"
    assert status(res, "a") == "completed" and status(res, "h") != "completed"
    assert undone == ["a"] and res.rolled_back == ["a"] and res.rollback_performed is True


async def test_cancel_rolls_back() -> None:
    never = asyncio.Event()
    running = asyncio.Event()
    undone: list[str] = []
    cancelled: list[str] = []

    async def hang(data: dict[str, Any]) -> None:
        running.set()
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append("h")
            raise

    defn = doc(step("a", "ok", rollback_actions=["undo_a"]), step("h", "hang", dependencies=["a"]))
    eng = make({"ok": lambda d: "ok", "hang": hang, "undo_a": lambda d: undone.append("a")})
    task = asyncio.create_task(run(eng, defn, execution_id="exec-cancel-1"))
    await asyncio.wait_for(running.wait(), BOUND)
    await eng.acancel("exec-cancel-1")
    res = await task
    assert res.status == "cancelled"
    assert res.execution_id == "exec-cancel-1"
    assert cancelled == ["h"] and status(res, "h") == "cancelled"
    assert undone == ["a"] and res.rolled_back == ["a"] and res.rollback_performed is True


async def test_signal_or_cancel_of_an_unknown_execution_is_not_found() -> None:
    eng = make({"ok": lambda d: 1})
    with pytest.raises(OrchestratorError) as info:
        await eng.acancel("no-such-execution")
    assert info.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(OrchestratorError) as info:
        await eng.asignal("no-such-execution", "approval", {"approved": True})
    assert info.value.code is ErrorCode.NOT_FOUND


# ------------------------------------------------------------------ no waves


async def test_no_wave_barrier() -> None:
    go = asyncio.Event()
    order: list[str] = []

    async def root(data: dict[str, Any]) -> str:
        return "root"

    async def fast(data: dict[str, Any]) -> str:
        order.append("fast")
        return "fast"

    async def slow(data: dict[str, Any]) -> str:
        order.append("slow-start")
        await go.wait()  # released only by a step that depends on `fast` alone
        order.append("slow-end")
        return "slow"

    async def follow(data: dict[str, Any]) -> str:
        order.append("follow")
        go.set()
        return "follow"

    defn = doc(
        step("root", "root"),
        step("fast", "fast", dependencies=["root"]),
        step("slow", "slow", dependencies=["root"]),
        step("follow", "follow", dependencies=["fast"]),
        step("end", "root", dependencies=["slow", "follow"]),
    )
    res = await run(make({"root": root, "fast": fast, "slow": slow, "follow": follow}), defn)
    assert res.status == "completed"
    assert order.index("follow") < order.index("slow-end")
    recs = res.step_records
    assert recs["follow"].started_at <= recs["slow"].ended_at
    assert recs["end"].started_at >= recs["slow"].ended_at


# ------------------------------------------------------------------ result


async def test_execution_result_fields() -> None:
    def inc(n: int) -> int:
        return n + 1

    defn = doc(
        step("a", "inc", input_mapping={"n": "n"}),
        step(
            "l",
            "inc",
            type="loop",
            dependencies=["a"],
            input_mapping={"n": "n"},
            output_mapping={"n": "result"},
            loop_condition="n < 3",
        ),
        workflow_id="fields",
        version="4.2",
    )
    res = await run(make({"inc": inc}), defn, {"n": 0})
    assert dataclasses.is_dataclass(res)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.status = "failed"  # type: ignore[misc]
    assert isinstance(res, bf.ExecutionResult)
    assert isinstance(res.execution_id, str) and res.execution_id
    assert res.workflow_id == "fields" and res.version == "4.2"
    assert res.status == "completed"
    assert res.result == {"n": 3, "a": 1}
    assert set(res.steps) == {"a", "l"}
    assert all(isinstance(s, bf.StepStatus) for s in res.steps.values())
    assert res.steps["a"] is bf.StepStatus.COMPLETED
    assert res.errors == [] and res.alerts == []
    assert res.rollback_performed is False and res.rolled_back == []
    assert isinstance(res.duration_s, float) and 0 <= res.duration_s < BOUND
    rec = res.step_records["a"]
    assert isinstance(rec, bf.StepRecord)
    assert rec.status == "completed" and rec.attempts == 1
    assert isinstance(rec.started_at, datetime) and rec.started_at.utcoffset() == timedelta(0)
    assert isinstance(rec.ended_at, datetime) and rec.ended_at >= rec.started_at
    assert isinstance(rec.duration_s, float) and rec.duration_s >= 0
    assert rec.error is None and rec.skipped_reason is None and rec.recovered is False
    assert rec.iterations is None
    assert res.step_records["l"].iterations == 3
    as_dict = res.to_dict()
    text = json.dumps(as_dict)
    assert json.loads(text)["workflow_id"] == "fields"
    assert as_dict["status"] == "completed"
    assert as_dict["steps"]["a"] == "completed"

    # another execution gets another id
    again = await run(make({"inc": inc}), defn, {"n": 0})
    assert again.execution_id != res.execution_id


def test_execute_is_the_sync_twin(tmp_path: Path) -> None:
    def write(path: str, text: str) -> str:
        Path(path).write_text(text)
        return path

    defn = doc(step("w", "write", input_mapping={"path": "target", "text": "'hello ' + who"}))
    res = make({"write": write}).execute(
        defn, {"target": str(tmp_path / "out.txt"), "who": "world"}
    )
    assert res.status == "completed"
    assert (tmp_path / "out.txt").read_text() == "hello world"


def test_a_skipped_step_made_no_attempt() -> None:
    defn = doc(step("s", "f", conditions=["false"]))
    res = make({"f": lambda d: 1}).execute(defn, {})
    rec = res.step_records["s"]
    assert rec.status == "skipped" and rec.attempts == 0


# ------------------------------------------------------------------ SLA and monitoring


async def test_sla_breach_alerts_but_never_stops_the_run(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    seen: list[dict[str, Any]] = []

    async def slow(data: dict[str, Any]) -> str:
        await asyncio.sleep(0.06)  # a duration to measure, not an ordering
        return "slow"

    defn = doc(
        step("slow", "slow"),
        step("quick", "quick", dependencies=["slow"]),
        sla_targets={"max_duration_s": 0.01, "steps": {"slow": 0.02, "quick": 30}},
    )
    eng = make({"slow": slow, "quick": lambda d: "quick"}, on_alert=[seen.append])
    res = await run(eng, defn)
    assert res.status == "completed" and status(res, "quick") == "completed"
    breaches = {a["target"]: a for a in res.alerts if a["kind"] == "sla_breach"}
    assert set(breaches) == {"workflow", "slow"}
    assert breaches["slow"]["limit_s"] == 0.02 and breaches["slow"]["actual_s"] >= 0.06
    assert breaches["workflow"]["limit_s"] == 0.01 and breaches["workflow"]["actual_s"] >= 0.06
    assert res.sla["slow"]["met"] is False and res.sla["quick"]["met"] is True
    assert res.sla["workflow"]["met"] is False
    assert res.sla["quick"]["limit_s"] == 30 and res.sla["quick"]["actual_s"] < 30
    called = [a for a in seen if a["kind"] == "sla_breach"]
    assert sorted(a["target"] for a in called) == ["slow", "workflow"]
    assert all(a in res.alerts for a in called)
    warned = [
        r for r in caplog.records if r.levelno == logging.WARNING and "slow" in r.getMessage()
    ]
    assert warned, [r.getMessage() for r in caplog.records]


async def test_a_failing_alert_callback_does_not_break_the_run() -> None:
    def broken(alert: dict[str, Any]) -> None:
        raise RuntimeError("pager down")

    seen: list[dict[str, Any]] = []

    async def slow(data: dict[str, Any]) -> str:
        await asyncio.sleep(0.03)
        return "slow"

    eng = make({"slow": slow}, on_alert=[broken, seen.append])
    res = await run(eng, doc(step("slow", "slow"), sla_targets={"max_duration_s": 0.001}))
    assert res.status == "completed"
    assert [a["target"] for a in seen] == ["workflow"]


async def test_anomaly_alert_when_a_run_is_twice_the_baseline() -> None:
    seen: list[dict[str, Any]] = []

    async def work(data: dict[str, Any]) -> str:
        if data.get("slow"):
            await asyncio.sleep(0.3)  # a duration to measure, not an ordering
        return "done"

    eng = make({"work": work}, on_alert=[seen.append])
    defn = doc(step("w", "work"), workflow_id="anomalous", sla_targets={"max_duration_s": 60})
    for _ in range(3):
        res = await run(eng, defn, {"slow": False})
        assert res.status == "completed"
    res = await run(eng, defn, {"slow": True})
    assert res.status == "completed"
    anomalies = [a for a in res.alerts if a["kind"] == "anomaly"]
    assert len(anomalies) == 1
    alert = anomalies[0]
    assert alert["target"] == "workflow"
    assert alert["actual_s"] > 2 * alert["baseline_s"]
    assert alert["actual_s"] >= 0.3
    assert res.sla["workflow"]["baseline_s"] == pytest.approx(alert["baseline_s"])
    assert res.sla["workflow"]["met"] is True
    assert alert in seen

    # another workflow_id (or another engine) has no baseline yet
    other = doc(step("w", "work"), workflow_id="fresh")
    res = await run(eng, other, {"slow": True})
    assert not [a for a in res.alerts if a["kind"] == "anomaly"]
    res = await run(make({"work": work}), defn, {"slow": True})
    assert not [a for a in res.alerts if a["kind"] == "anomaly"]


# ------------------------------------------------------------------ more edges


async def test_parallel_children_are_rolled_back_in_reverse_completion_order() -> None:
    first_done = asyncio.Event()
    undone: list[str] = []

    async def second(data: dict[str, Any]) -> str:  # listed first, completes last
        await first_done.wait()
        return "second"

    async def first(data: dict[str, Any]) -> str:
        return "first"

    async def mark(data: dict[str, Any]) -> str:  # starts only once `first` completed
        first_done.set()
        return "mark"

    eng = make(
        {
            "first": first,
            "second": second,
            "mark": mark,
            "boom": Recorder().failing("boom"),
            "undo_first": lambda d: undone.append("c_first"),
            "undo_second": lambda d: undone.append("c_second"),
        }
    )
    defn = doc(
        step("gate", "first"),
        step("after_gate", "mark", dependencies=["gate"]),
        {
            "step_id": "fan",
            "type": "parallel",
            "parallel_steps": [
                step("c_second", "second", rollback_actions=["undo_second"]),
                step("c_first", "first", rollback_actions=["undo_first"]),
            ],
        },
        step("boom", "boom", dependencies=["fan"]),
    )
    res = await run(eng, defn)
    assert res.status == "failed"
    assert undone == ["c_second", "c_first"]
    assert res.rolled_back == ["c_second", "c_first"]


async def test_input_is_not_mutated_and_runs_do_not_leak() -> None:
    eng = make({"f": lambda data: len(data)})
    defn = doc(step("a", "f"), step("b", "f", dependencies=["a"]), global_variables={"g": 1})
    given = {"x": 1}
    first = await run(eng, defn, given)
    assert given == {"x": 1}
    second = await run(eng, defn, given)
    assert first.result == second.result == {"g": 1, "x": 1, "a": 2, "b": 3}
    assert first.result is not second.result


async def test_concurrent_executions_are_isolated() -> None:
    reached = {"e1": asyncio.Event(), "e2": asyncio.Event()}

    async def prep(tag: str) -> str:
        reached[tag].set()
        return tag

    eng = make({"prep": prep, "ship": lambda data: data["ok"]["reviewer"]})
    defn = doc(
        step("prep", "prep", input_mapping={"tag": "tag"}),
        {"step_id": "ok", "type": "approval", "dependencies": ["prep"], "timeout": 4},
        step("ship", "ship", dependencies=["ok"]),
    )
    t1 = asyncio.create_task(run(eng, defn, {"tag": "e1"}, execution_id="e1"))
    t2 = asyncio.create_task(run(eng, defn, {"tag": "e2"}, execution_id="e2"))
    await asyncio.wait_for(asyncio.gather(reached["e1"].wait(), reached["e2"].wait()), BOUND)
    await eng.asignal("e2", "approval", {"approved": True, "reviewer": "two", "comment": None})
    await eng.asignal("e1", "approval", {"approved": True, "reviewer": "one", "comment": None})
    r1, r2 = await asyncio.gather(t1, t2)
    assert (r1.result["ship"], r2.result["ship"]) == ("one", "two")


async def test_cancel_while_waiting_for_an_approval() -> None:
    reached = asyncio.Event()
    undone: list[str] = []

    async def prep(data: dict[str, Any]) -> str:
        reached.set()
        return "ready"

    eng = make({"prep": prep, "ship": lambda d: "shipped", "undo": lambda d: undone.append("prep")})
    defn = doc(
        step("prep", "prep", rollback_actions=["undo"]),
        {"step_id": "ok", "type": "approval", "dependencies": ["prep"], "timeout": 4},
        step("ship", "ship", dependencies=["ok"]),
    )
    task = asyncio.create_task(run(eng, defn, execution_id="exec-cancel-approval"))
    await asyncio.wait_for(reached.wait(), BOUND)
    await eng.acancel("exec-cancel-approval")
    res = await task
    assert res.status == "cancelled"
    assert undone == ["prep"] and res.rolled_back == ["prep"]
    assert status(res, "ship") != "completed"


def test_sync_cancel_from_another_thread() -> None:
    running = threading.Event()
    release = threading.Event()
    undone: list[str] = []

    def hold(data: dict[str, Any]) -> str:
        running.set()
        release.wait(BOUND)
        return "held"

    eng = make({"ok": lambda d: "ok", "hold": hold, "undo": lambda d: undone.append("a")})
    defn = doc(step("a", "ok", rollback_actions=["undo"]), step("h", "hold", dependencies=["a"]))

    def canceller() -> None:
        running.wait(BOUND)
        eng.cancel("exec-sync-cancel")

    thread = threading.Thread(target=canceller, daemon=True)
    thread.start()
    try:
        res = eng.execute(defn, {}, execution_options={"execution_id": "exec-sync-cancel"})
    finally:
        release.set()
        thread.join(BOUND)
    assert res.status == "cancelled"
    assert undone == ["a"]


async def test_workflow_timeout_cancels_the_running_step() -> None:
    never = asyncio.Event()
    cancelled: list[str] = []

    async def hang(data: dict[str, Any]) -> None:
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append("h")
            raise

    res = await run(make({"hang": hang}), doc(step("h", "hang"), timeout=0.2))
    assert res.status == "timeout"
    assert cancelled == ["h"]
    assert status(res, "h") == "cancelled"


async def test_workflow_timeout_while_waiting_for_an_approval() -> None:
    defn = doc(
        step("prep", "f"),
        {"step_id": "ok", "type": "approval", "dependencies": ["prep"]},
        timeout=0.2,
    )
    res = await run(make({"f": lambda d: 1}), defn)
    assert res.status == "timeout"


async def test_a_timed_out_attempt_is_retried() -> None:
    never = asyncio.Event()
    calls = 0

    async def first_hangs(data: dict[str, Any]) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await never.wait()
        return "second try"

    defn = doc(step("s", "act", timeout=0.1, retry_policy={"max_attempts": 2, **FAST}))
    res = await run(make({"act": first_hangs}), defn)
    assert res.status == "completed"
    assert calls == 2 and res.step_records["s"].attempts == 2
    assert res.result["s"] == "second try"


def test_a_sync_action_past_its_timeout_is_timeout() -> None:
    release = threading.Event()

    def block(data: dict[str, Any]) -> str:
        release.wait(BOUND)
        return "late"

    try:
        start = time.monotonic()
        res = make({"block": block}).execute(doc(step("b", "block", timeout=0.1)), {})
        assert time.monotonic() - start < 3
    finally:
        release.set()
    assert res.status == "failed" and code(res, "b") == "timeout"


async def test_error_handler_sees_a_timeout_and_output_mapping_applies() -> None:
    never = asyncio.Event()
    got: list[dict[str, Any]] = []

    async def hang(data: dict[str, Any]) -> None:
        await never.wait()

    def handler(ctx: dict[str, Any]) -> dict[str, Any]:
        got.append(ctx["error"])
        return {"v": 42}

    defn = doc(
        step(
            "h",
            "hang",
            timeout=0.1,
            error_handlers=["handler"],
            output_mapping={"value": "result.v"},
        ),
        step("use", "use", dependencies=["h"], input_mapping={"x": "value"}),
    )
    res = await run(make({"hang": hang, "handler": handler, "use": lambda x: x + 1}), defn)
    assert res.status == "completed"
    assert got[0]["step_id"] == "h" and got[0]["code"] == "timeout"
    assert res.step_records["h"].recovered is True
    assert res.result["value"] == 42 and res.result["use"] == 43


async def test_steps_variable_sees_attempts_and_skips() -> None:
    flaky = Flaky(2)
    seen: list[Any] = []
    defn = doc(
        step("flaky", "flaky", retry_policy={"max_attempts": 3, **FAST}),
        step("never", "flaky", conditions=["false"]),
        step(
            "look",
            "look",
            dependencies=["flaky", "never"],
            input_mapping={"a": "steps.flaky.attempts", "s": "steps.never.status"},
        ),
    )
    res = await run(make({"flaky": flaky, "look": lambda a, s: seen.append((a, s))}), defn)
    assert res.status == "completed"
    assert seen == [(3, "skipped")]


async def test_a_failing_loop_iteration_fails_the_loop() -> None:
    calls: list[int] = []

    def act(i: int) -> int:
        calls.append(i)
        if i == 1:
            raise ValueError("iteration 1 broke")
        return i

    defn = doc(
        step(
            "spin",
            "act",
            type="loop",
            loop_condition="iteration < 5",
            input_mapping={"i": "iteration"},
        )
    )
    res = await run(make({"act": act}), defn)
    assert res.status == "failed"
    assert calls == [0, 1]
    assert code(res, "spin") == "execution_failed"


async def test_parallel_below_threshold_with_continue_on_failure() -> None:
    rec = Recorder()
    eng = make({"ok": rec.action("ok", 1), "bad": rec.failing("bad")})
    res = await run(eng, _fan(1.0, continue_on_failure=True))
    assert res.status == "completed"
    assert status(res, "fan") == "failed"
    assert status(res, "after") == "skipped" and reason(res, "after") == "dependency_failed"


async def test_cancel_remaining_with_for_each_names_the_children() -> None:
    never = asyncio.Event()
    started = asyncio.Event()

    async def work(x: int) -> int:
        if x == 0:
            started.set()
            await never.wait()
        await started.wait()
        return x

    defn = doc(
        {
            "step_id": "each",
            "type": "parallel",
            "for_each": "items",
            "cancel_remaining": True,
            "parallel_failure_threshold": 0.5,
            "parallel_steps": [step("w", "work", input_mapping={"x": "item"})],
        }
    )
    res = await run(make({"work": work}), defn, {"items": [0, 1, 2]})
    assert res.status == "completed"
    assert status(res, "w[0]") == "cancelled"
    assert status(res, "w[1]") == "completed" and status(res, "w[2]") == "completed"
    assert res.result["each"]["results"] == {"w[1]": 1, "w[2]": 2}


async def test_nothing_new_starts_after_a_failure() -> None:
    rolled = threading.Event()
    started: list[str] = []

    def gate(data: dict[str, Any]) -> str:  # a thread: not cancellable, ends after the failure
        started.append("gate")
        rolled.wait(1.0)
        return "gate"

    def late(data: dict[str, Any]) -> str:
        started.append("late")
        return "late"

    eng = make(
        {
            "ok": lambda d: "ok",
            "gate": gate,
            "late": late,
            "boom": Recorder().failing("boom"),
            "undo": lambda d: rolled.set(),
        }
    )
    defn = doc(
        step("a", "ok", rollback_actions=["undo"]),
        step("gate", "gate"),
        step("late", "late", dependencies=["gate"]),
        step("boom", "boom", dependencies=["a"]),
    )
    res = await run(eng, defn)
    assert res.status == "failed"
    assert "late" not in started
    assert status(res, "late") not in ("completed", "running")


async def test_async_step_action_with_keyword_arguments() -> None:
    @bf.step(track=False)
    async def add(a: int, b: int) -> int:
        return a + b

    defn = doc(step("s", "add", input_mapping={"a": "x", "b": "2"}))
    res = await run(make({"add": add}), defn, {"x": 40})
    assert res.status == "completed" and res.result["s"] == 42


async def test_anomaly_baseline_counts_completed_executions_only() -> None:
    async def work(data: dict[str, Any]) -> str:
        if data.get("slow"):
            await asyncio.sleep(0.15)  # a duration to measure, not an ordering
        if data.get("fail"):
            raise ValueError("failed run")
        return "done"

    eng = make({"work": work})
    defn = doc(step("w", "work"), workflow_id="baseline-completed")
    for _ in range(3):
        await run(eng, defn, {})
    for _ in range(4):  # slow but failed: not part of the baseline
        assert (await run(eng, defn, {"slow": True, "fail": True})).status == "failed"
    res = await run(eng, defn, {"slow": True})
    assert [a["kind"] for a in res.alerts] == ["anomaly"]


async def test_preset_approval_fills_missing_fields_with_none() -> None:
    res = await run(
        make({"prep": lambda d: 1, "ship": lambda d: 2}),
        _approval(),
        approvals={"ok": {"approved": True}},
    )
    assert res.status == "completed"
    assert res.result["ok"] == {"approved": True, "reviewer": None, "comment": None}


async def test_for_each_over_a_non_list_fails_the_step() -> None:
    defn = doc(
        {"step_id": "each", "type": "parallel", "for_each": "n", "parallel_steps": [step("k", "f")]}
    )
    res = await run(make({"f": lambda d: 1}), defn, {"n": 5})
    assert res.status == "failed"
    assert status(res, "each") == "failed"
    ErrorCode(code(res, "each"))


async def test_branches_of_a_skipped_conditional_are_dependencies_skipped() -> None:
    rec = Recorder()
    defn = doc(
        step("gate", "x", conditions=["false"]),
        {
            "step_id": "route",
            "type": "conditional",
            "dependencies": ["gate"],
            "conditions": [{"if": "true", "then": ["t"]}, {"else": ["e"]}],
        },
        step("t", "x"),
        step("e", "x"),
    )
    res = await run(make({"x": rec.action("x")}), defn)
    assert res.status == "completed"
    assert reason(res, "route") == "dependencies_skipped"
    assert reason(res, "t") == "dependencies_skipped" and reason(res, "e") == "dependencies_skipped"
    assert rec.calls == []


async def test_branch_step_with_another_dependency_waits_for_both() -> None:
    go = asyncio.Event()
    order: list[str] = []

    async def slow(data: dict[str, Any]) -> str:
        await go.wait()
        order.append("slow")
        return "slow"

    async def t(data: dict[str, Any]) -> str:
        order.append("t")
        return "t"

    async def release(data: dict[str, Any]) -> str:
        go.set()
        return "released"

    defn = doc(
        step("slow", "slow"),
        {"step_id": "route", "type": "conditional", "conditions": [{"if": "true", "then": ["t"]}]},
        step("t", "t", dependencies=["slow"]),
        step("rel", "release", dependencies=["route"]),
    )
    res = await run(make({"slow": slow, "t": t, "release": release}), defn)
    assert res.status == "completed"
    assert order == ["slow", "t"]


async def test_retry_waits_its_initial_delay() -> None:
    flaky = Flaky(1)
    defn = doc(
        step("s", "flaky", retry_policy={"max_attempts": 2, "initial_delay": 0.2, "jitter": 0})
    )
    start = time.monotonic()
    res = await run(make({"flaky": flaky}), defn)
    assert res.status == "completed" and flaky.calls == 2
    assert time.monotonic() - start >= 0.19


async def test_sync_actions_do_not_block_the_event_loop() -> None:
    poked = threading.Event()

    def blocking(data: dict[str, Any]) -> bool:
        return poked.wait(2.0)  # True only if the async sibling ran meanwhile

    async def poke(data: dict[str, Any]) -> str:
        poked.set()
        return "poked"

    res = await run(
        make({"blocking": blocking, "poke": poke}), doc(step("b", "blocking"), step("p", "poke"))
    )
    assert res.status == "completed"
    assert res.result["b"] is True


async def test_async_error_handler_and_async_rollbacks_are_awaited() -> None:
    undone: list[str] = []

    async def handler(ctx: dict[str, Any]) -> str:
        await asyncio.sleep(0)
        return f"handled {ctx['error']['code']}"

    async def undo1(data: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        undone.append("undo1")

    async def undo2(data: dict[str, Any]) -> None:
        undone.append("undo2")

    eng = make(
        {
            "boom": Recorder().failing("boom"),
            "ok": lambda d: "ok",
            "handler": handler,
            "undo1": undo1,
            "undo2": undo2,
        }
    )
    defn = doc(
        step("r", "boom", error_handlers=["handler"]),
        step("a", "ok", dependencies=["r"], rollback_actions=["undo1", "undo2"]),
        step("z", "boom", dependencies=["a"]),
    )
    res = await run(eng, defn)
    assert res.result["r"] == "handled execution_failed"
    assert res.status == "failed"
    assert sorted(undone) == ["undo1", "undo2"]  # every rollback action of the step, once
    assert res.rolled_back == ["a"]


def test_engine_options_are_checked() -> None:
    with pytest.raises(OrchestratorError) as info:
        bf.WorkflowEngine(actions={"x": 42}, provider="local")
    assert info.value.code is ErrorCode.INVALID_CONFIG
    with pytest.raises(OrchestratorError) as info:
        bf.WorkflowEngine(actions={}, provider="nope")
    assert info.value.code in (ErrorCode.NOT_FOUND, ErrorCode.INVALID_CONFIG)


async def test_to_dict_is_json_able_with_common_python_outputs() -> None:
    from decimal import Decimal

    stamp = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)

    def produce(data: dict[str, Any]) -> dict[str, Any]:
        return {"created_at": stamp, "amount": Decimal("12.50"), "raw": b"\x00\x01", "tags": {"a"}}

    res = await run(make({"produce": produce}), doc(step("p", "produce")))
    assert res.status == "completed"
    assert res.result["p"]["created_at"] == stamp  # the result keeps the Python values
    text = json.dumps(res.to_dict())  # the contract: to_dict() gives a JSON-able dict
    assert "2024-01-02" in text
