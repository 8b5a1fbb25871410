"""Fuzz: random options and inputs for steps, graphs, breakers, retry policies and
workflows. Each either builds (runs) or raises an ``OrchestratorError`` with the code
API.md names; never a raw ``TypeError``/``ValueError``/…, never a hang.

Every case hypothesis found is pinned below its property as an explicit example.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import functools
import operator
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import beluga_flows as bf
from beluga_flows import END, START, ErrorCode, OrchestratorError

T = TypeVar("T")

BUILD = settings(max_examples=150, deadline=dt.timedelta(seconds=2))
RUN = settings(
    max_examples=60,
    deadline=dt.timedelta(seconds=10),
    suppress_health_check=[HealthCheck.too_slow],
)
CONFIG = {ErrorCode.INVALID_CONFIG}
BUILDER = {ErrorCode.INVALID_CONFIG, ErrorCode.NOT_FOUND}

# Anything a caller might pass by mistake.
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.sampled_from([10**400, -(10**400)]),  # beyond any float
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.binary(max_size=2),
    st.lists(st.integers(), max_size=2),
    st.tuples(st.text(max_size=2)),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.sets(st.integers(), max_size=2),
    st.timedeltas(min_value=dt.timedelta(days=-2), max_value=dt.timedelta(days=2)),
    st.just(object()),
    st.just(len),
    st.just(ValueError),
    st.sampled_from(list(ErrorCode)),
)
seconds = st.one_of(
    st.floats(min_value=0.001, max_value=100), st.integers(min_value=1, max_value=100), junk
)
counts = st.one_of(st.integers(min_value=-3, max_value=30), junk)


def outcome(make: Callable[[], T], codes: set[ErrorCode]) -> T | None:
    """``make()``'s value, or ``None`` when it raised an ``OrchestratorError`` of
    ``codes``; any other exception propagates (that is what the fuzz looks for)."""
    try:
        return make()
    except OrchestratorError as err:
        assert err.code in codes, f"{err.code}: {err}"
        return None


def within(seconds: float, fn: Callable[[], T]) -> T:
    """``fn()`` on a worker thread; failing (not hanging) when it takes too long."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(fn).result(timeout=seconds)
    finally:
        pool.shutdown(wait=False)


def identity(state: Any) -> None:
    return None


# ------------------------------------------------------------------ values


retry_fields = st.fixed_dictionaries(
    {},
    optional={
        "max_attempts": counts,
        "initial_delay": seconds,
        "max_delay": seconds,
        "multiplier": st.one_of(st.floats(min_value=1, max_value=5), junk),
        "jitter": st.one_of(st.floats(min_value=0, max_value=1), junk),
        "retry_on": st.one_of(
            st.just((ConnectionError,)), st.just((ErrorCode.TIMEOUT,)), st.just(callable), junk
        ),
    },
)


@BUILD
@given(retry_fields)
@example({"initial_delay": 10**400})  # float(int) overflowed: OverflowError
@example({"max_delay": -(10**400)})
@example({"multiplier": float("nan")})  # nan slipped past "< 1"
@example({"initial_delay": None})  # accepted, then an AssertionError computing a delay
def test_retry_policy_fields(fields: dict[str, Any]) -> None:
    policy = outcome(lambda: bf.RetryPolicy(**fields), CONFIG)
    if policy is not None:
        assert policy.max_attempts >= 1 and policy.multiplier >= 1
        assert policy.backoff(1) >= 0 and policy.backoff(50) <= policy.max_delay


breaker_fields = st.fixed_dictionaries(
    {},
    optional={
        "failure_threshold": counts,
        "recovery_timeout": seconds,
        "half_open_max_calls": counts,
        "success_threshold": counts,
        "failure_rate": st.one_of(st.floats(min_value=0.01, max_value=1), junk),
        "window": counts,
        "slow_call_duration": seconds,
        "store": junk,
        "exclude": st.one_of(st.just((KeyError,)), st.just(ErrorCode.TIMEOUT), junk),
    },
)


@BUILD
@given(st.one_of(st.text(max_size=6).map(lambda s: "fuzz-" + s), junk), breaker_fields)
@example("fuzz-big", {"recovery_timeout": 10**400})  # OverflowError
@example("fuzz-nan", {"slow_call_duration": float("nan")})
@example("fuzz-inf", {"recovery_timeout": float("inf")})
def test_circuit_breaker_options(name: Any, fields: dict[str, Any]) -> None:
    outcome(lambda: bf.CircuitBreaker(name, **fields), CONFIG)


breaker_values = st.one_of(
    st.just("fuzz-shared"), st.builds(lambda: bf.CircuitBreaker("fuzz-object")), junk
)
policies = st.one_of(st.builds(bf.RetryPolicy, max_attempts=st.integers(1, 5)), junk)
limit_names = st.one_of(st.just("fuzz-limit"), st.text(max_size=3), junk)
step_options = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.text(max_size=4), junk),
        "description": st.one_of(st.text(max_size=4), junk),
        "retries": counts,
        "retry_policy": policies,
        "timeout": seconds,
        "concurrency": limit_names,
        "max_concurrency": counts,
        "rate_limit": limit_names,
        "circuit_breaker": breaker_values,
        "cache": junk,
        "tags": st.one_of(st.lists(st.text(max_size=3), max_size=3), junk),
        "track": junk,
    },
)


@BUILD
@given(step_options)
@example({"timeout": 10**400})  # OverflowError
@example({"tags": {"a": 1}})
def test_step_options(options: dict[str, Any]) -> None:
    made = outcome(lambda: bf.step(**options)(identity), CONFIG)
    if made is not None:
        assert isinstance(made, bf.Step) and made.spec.name


# ------------------------------------------------------------------ graphs

graph_options = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.text(max_size=4), junk),
        "timeout": seconds,
        "retries": counts,
        "max_workers": counts,
        "parallel": junk,
        "max_iterations": counts,
        "reducers": st.one_of(st.just({"acc": operator.add}), junk),
        "task_runner": junk,
        "provider": st.one_of(st.sampled_from(["local", "nowhere"]), junk),
    },
)


@BUILD
@given(graph_options)
@example({"reducers": 5})  # dict(5): TypeError
@example({"reducers": "ab"})  # dict("ab"): ValueError
@example({"reducers": [("acc", 1)]})
def test_graph_constructor_options(options: dict[str, Any]) -> None:
    outcome(lambda: bf.Graph(**options), BUILDER)


names = st.one_of(st.sampled_from(["a", "b", "c", START, END]), st.text(max_size=2), junk)
nodes = st.one_of(st.just(identity), st.builds(lambda: bf.step(identity)), junk)
overrides = st.fixed_dictionaries(
    {}, optional={"retry_policy": policies, "timeout": seconds, "track": junk}
)
calls = st.one_of(
    st.tuples(st.just("add_node"), names, nodes, overrides),
    st.tuples(st.just("add_edge"), names, names),
    st.tuples(
        st.just("add_conditional_edges"),
        names,
        st.one_of(st.just(lambda s: END), junk),
        st.one_of(st.none(), st.dictionaries(st.text(max_size=2), names, max_size=3), junk),
    ),
    st.tuples(st.just("set_entry_point"), st.one_of(names, st.lists(names, max_size=3))),
    st.tuples(st.just("set_finish_point"), st.one_of(names, st.lists(names, max_size=3))),
)


def build(steps: list[tuple[Any, ...]]) -> bf.Graph:
    g = bf.Graph(provider="local")
    for op, *args in steps:
        kwargs = args.pop() if op == "add_node" else {}
        outcome(functools.partial(getattr(g, op), *args, **kwargs), BUILDER)
    return g


@BUILD
@given(st.lists(calls, max_size=10))
@example([("add_edge", ["a"], "b")])  # unhashable node name: TypeError at compile
@example([("set_entry_point", 5)])  # list(5): TypeError
@example([("add_node", "a", identity, {}), ("add_conditional_edges", "a", len, {"x": ["a"]})])
@example([("add_node", "a", identity, {}), ("add_conditional_edges", "a", len, [["a"]])])
@example([("add_node", "a", identity, {}), ("add_edge", "a", "a"), ("add_edge", START, "a")])
def test_graph_builder_calls(steps: list[tuple[Any, ...]]) -> None:
    g = build(steps)
    compiled = outcome(g.compile, BUILDER)
    if compiled is not None:
        assert compiled.draw_mermaid().startswith("flowchart TD")


# ------------------------------------------------------------------ running graphs

states = st.one_of(
    st.dictionaries(st.sampled_from(["acc", "x", "y"]), st.integers(), max_size=3), junk
)
updates = st.one_of(
    st.none(),
    st.dictionaries(
        st.one_of(st.sampled_from(["acc", "x", "y"]), st.integers()),
        st.one_of(st.integers(), st.text(max_size=2), st.lists(st.integers(), max_size=2)),
        max_size=3,
    ),
    junk,
)


@RUN
@given(states, updates, updates)
@example(5, None, None)
@example({}, "not a dict", None)
@example({"acc": 1}, {"acc": "x"}, None)  # a reducer that fails on the update
def test_invoking_a_graph_with_random_inputs_and_node_results(
    state: Any, first: Any, second: Any
) -> None:
    g = bf.Graph(provider="local", reducers={"acc": operator.add}, timeout=30)
    g.add_node("first", lambda s: first).add_node("second", lambda s: second)
    g.add_edge(START, "first").add_edge(START, "second")  # in parallel
    try:
        result = within(60, lambda: g.invoke(state))
    except OrchestratorError as err:
        if state is not None and not isinstance(state, dict):
            assert err.code is ErrorCode.INVALID_INPUT, err
            return
        # A node's result that is not a dict, a failing reducer, two parallel
        # writers of one key: the node fails (or the run) with INVALID_STATE.
        cause = err.__cause__ if err.code is ErrorCode.EXECUTION_FAILED else err
        assert isinstance(cause, OrchestratorError), repr(cause)
        assert cause.code is ErrorCode.INVALID_STATE, cause
        return
    assert state is None or isinstance(state, dict)
    assert isinstance(result, dict)


@RUN
@given(st.one_of(st.sampled_from(["a", "b", END, "ghost"]), st.lists(names, max_size=3), junk))
@example({"unhashable": 1})
@example(["a", ["b"]])
def test_a_router_returning_anything(choice: Any) -> None:
    g = bf.Graph(provider="local", max_iterations=2)
    g.add_node("a", identity).add_node("b", identity).set_entry_point("a")
    g.add_conditional_edges("a", lambda s: choice, {"go": "b", "stop": END, "a": "a"})
    try:
        within(60, lambda: g.invoke({}))
    except OrchestratorError as err:
        codes = (ErrorCode.INVALID_STATE, ErrorCode.WORKFLOW_DEADLOCK)
        assert err.code in codes, err


# ------------------------------------------------------------------ workflows

workflow_options = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.text(max_size=4), junk),
        "task_queue": st.one_of(st.text(max_size=4), junk),
        "timeout": seconds,
        "retries": counts,
        "mode": st.one_of(st.sampled_from(["auto", "served", "in_process"]), junk),
    },
)


def order(order_id: int) -> dict[str, int]:
    return {"order_id": order_id}


@BUILD
@given(
    st.one_of(st.just(order), st.builds(lambda: bf.flow(order)), junk),
    workflow_options,
)
@example(order, {"timeout": 10**400})
def test_workflow_constructor_options(fn: Any, options: dict[str, Any]) -> None:
    wf = outcome(lambda: bf.Workflow(fn, **options), CONFIG)
    if wf is not None:
        assert wf.name and wf.task_queue == options.get("task_queue", "default")
