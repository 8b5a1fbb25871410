"""Agent patterns (Supervisor, Blackboard, Handoff, hedge) on both engines."""

from __future__ import annotations

import asyncio
import datetime as dt
import operator
import threading
from pathlib import Path
from typing import Any

import pytest

import beluga_flows as bf
from beluga_flows import ErrorCode, OrchestratorError
from beluga_flows.testing import FakeClock


def recording(log: list[str], name: str, fn: Any = None) -> Any:
    lock = threading.Lock()

    def agent(value: Any) -> Any:
        with lock:
            log.append(name)
        return fn(value) if fn else f"{value}>{name}"

    agent.__name__ = name
    return agent


# ---------------------------------------------------------------- Supervisor


def test_round_robin_rotates_across_rounds_and_invocations(engine: str) -> None:
    log: list[str] = []
    agents = [recording(log, n) for n in ("a", "b", "c")]
    sup = bf.Supervisor(bf.round_robin(), agents)
    assert [sup.invoke(i) for i in range(4)] == ["0>a", "1>b", "2>c", "3>a"]
    assert sup.last_path == ("a",)
    chained = bf.Supervisor(bf.round_robin(), agents, max_rounds=3, name="pipeline")
    assert chained.invoke("x") == "x>a>b>c" and chained.last_path == ("a", "b", "c")


def test_round_robin_is_safe_under_concurrent_invocations() -> None:
    log: list[str] = []
    sup = bf.Supervisor(bf.round_robin(), [recording(log, n) for n in "abc"], provider="local")
    sup.batch(range(30), max_concurrency=10)
    assert sorted(log.count(n) for n in "abc") == [10, 10, 10]


async def test_load_balanced_picks_the_agent_with_fewest_calls_in_flight() -> None:
    started = {"a": asyncio.Event(), "b": asyncio.Event()}
    release = asyncio.Event()

    def busy(name: str) -> Any:
        async def agent(value: Any) -> str:
            started[name].set()
            await release.wait()
            return f"{value}>{name}"

        agent.__name__ = name
        return agent

    sup = bf.Supervisor(bf.load_balanced(), [busy("a"), busy("b")], provider="local")
    first = asyncio.ensure_future(sup.ainvoke(1))
    await started["a"].wait()  # a is busy: the next call goes to b
    second = asyncio.ensure_future(sup.ainvoke(2))
    await started["b"].wait()
    release.set()
    assert await asyncio.gather(first, second) == ["1>a", "2>b"]
    # nothing in flight, equal counts: the first in order; then the one called least
    assert await sup.ainvoke(3) == "3>a"
    assert await sup.ainvoke(4) == "4>b"


def test_load_balanced_releases_an_agent_that_failed() -> None:
    def bad(value: Any) -> Any:
        raise ValueError("no")

    def good(value: Any) -> str:
        return "ok"

    strategy = bf.load_balanced()
    sup = bf.Supervisor(strategy, {"bad": bad, "good": good}, provider="local")
    with pytest.raises(OrchestratorError):
        sup.invoke(1)
    assert sup.invoke(2) == "ok"  # bad: 0 in flight, 1 call → good (0 calls)
    with pytest.raises(OrchestratorError):
        sup.invoke(3)  # equal again: the first in order


def test_delegate_by_skill_by_key_and_by_keywords(engine: str) -> None:
    log: list[str] = []
    skills = {"coder": ["python", "SQL"], "writer": "essay"}
    agents = {"coder": recording(log, "coder"), "writer": recording(log, "writer")}
    sup = bf.Supervisor(bf.delegate_by_skill(skills), agents)
    assert sup.invoke({"skill": "sql", "task": "top customers"}).endswith(">coder")
    assert sup.invoke("please write an Essay on whales") == "please write an Essay on whales>writer"
    assert sup.invoke({"task": "fix my python essay in python"}).endswith(">coder")  # 2 vs 1
    assert log == ["coder", "writer", "coder"]


@pytest.mark.parametrize("question", [{"skill": "dance"}, "sing me a song", {"task": 3}])
def test_delegate_by_skill_refuses_an_unknown_skill_listing_the_skills(question: Any) -> None:
    sup = bf.Supervisor(
        bf.delegate_by_skill({"coder": ["python"]}), {"coder": abs}, provider="local"
    )
    with pytest.raises(OrchestratorError) as info:
        sup.invoke(question)
    assert info.value.code is ErrorCode.NOT_FOUND and "coder: ['python']" in str(info.value)


def test_delegate_by_skill_over_rounds_stops_when_the_output_names_no_skill() -> None:
    skills = {"planner": ["plan"], "coder": ["code"]}
    agents = {"planner": lambda t: "now code it", "coder": lambda t: "done: 42"}
    sup = bf.Supervisor(bf.delegate_by_skill(skills), agents, max_rounds=5, provider="local")
    assert sup.invoke("plan the work") == "done: 42"
    assert sup.last_path == ("planner", "coder")


def test_a_callable_strategy_may_stop_or_name_an_unknown_agent() -> None:
    def pick(value: Any, names: list[str]) -> str | None:
        return None if value > 10 else "double" if value > 0 else "ghost"

    sup = bf.Supervisor(pick, {"double": lambda x: x * 2}, max_rounds=10, provider="local")
    assert sup.invoke(3) == 12 and sup.last_path == ("double",) * 2
    with pytest.raises(OrchestratorError) as info:
        sup.invoke(0)
    assert info.value.code is ErrorCode.NOT_FOUND and "'ghost'" in str(info.value)


def test_a_failing_agent_is_named_with_its_error_as_cause(engine: str) -> None:
    def draft(x: str) -> str:
        return x + "!"

    def edit(x: str) -> str:
        raise KeyError("typo")

    sup = bf.Supervisor(bf.round_robin(), [draft, edit], max_rounds=2, name="failing-sup")
    with pytest.raises(OrchestratorError) as info:
        sup.invoke("x")
    err = info.value
    assert err.code is ErrorCode.EXECUTION_FAILED and "'edit'" in str(err)
    assert isinstance(err.__cause__, KeyError)
    assert err.agent == "edit" and err.path == ("draft", "edit")  # type: ignore[attr-defined]


def test_a_step_agent_keeps_its_options_under_the_agent_name() -> None:
    calls: list[int] = []

    @bf.step(retries=2, track=False)
    def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) < 3:
            raise ConnectionError("try again")
        return x

    sup = bf.Supervisor(bf.round_robin(), {"worker": flaky}, provider=_no_wait_engine())
    assert sup.invoke(7) == 7 and len(calls) == 3
    assert sup.agents["worker"].name == "worker"


def _no_wait_engine() -> bf.LocalEngine:
    return bf.LocalEngine(sleep=FakeClock().sleep)


def test_patterns_are_runnables(engine: str) -> None:
    sup = bf.Supervisor(bf.round_robin(), {"up": lambda s: "".join(s).upper()})
    assert sup.batch(["a", "b"]) == ["A", "B"]
    assert list(sup.stream("c")) == ["C"]
    assert (sup | (lambda s: s + "!")).invoke(["d"]) == "D!"


@pytest.mark.parametrize(
    "build",
    [
        lambda: bf.Supervisor("round", [abs]),
        lambda: bf.Supervisor(bf.round_robin(), []),
        lambda: bf.Supervisor(bf.round_robin(), "abs"),
        lambda: bf.Supervisor(bf.round_robin(), [abs, abs]),
        lambda: bf.Supervisor(bf.round_robin(), [abs, 3]),
        lambda: bf.Supervisor(bf.round_robin(), [abs], max_rounds=0),
        lambda: bf.Supervisor(bf.round_robin(), {"": abs}),
        lambda: bf.Supervisor(bf.delegate_by_skill({"ghost": ["x"]}), {"real": abs}),
        lambda: bf.delegate_by_skill({}),
        lambda: bf.delegate_by_skill({"a": []}),
        lambda: bf.delegate_by_skill({"a": [""]}),
        lambda: bf.Blackboard("done", [abs]),
        lambda: bf.Blackboard(bool, [abs], max_rounds=-1),
        lambda: bf.Blackboard(bool, [abs], reducers={"k": 1}),
        lambda: bf.Handoff({"a": abs}, entry="b"),
        lambda: bf.Handoff({"a": abs}, entry="a", max_hops=0),
        lambda: bf.handoff_to(""),
        lambda: bf.hedge(abs, abs, delay=-1),
        lambda: bf.hedge(abs, abs, delay="soon"),
        lambda: bf.hedge(abs, None, delay=1),
    ],
)
def test_invalid_configuration_is_refused_at_construction(build: Any) -> None:
    with pytest.raises(OrchestratorError) as info:
        build()
    assert info.value.code is ErrorCode.INVALID_CONFIG


def test_an_unknown_provider_is_not_found_at_construction() -> None:
    with pytest.raises(OrchestratorError) as info:
        bf.Supervisor(bf.round_robin(), [abs], provider="nowhere")
    assert info.value.code is ErrorCode.NOT_FOUND


# ---------------------------------------------------------------- Blackboard


async def test_blackboard_agents_share_a_round_snapshot_and_run_concurrently() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    a_waiting = asyncio.Event()

    async def writer(board: dict[str, Any]) -> dict[str, Any]:
        seen.append(("writer", dict(board)))
        a_waiting.set()
        return {"draft": board.get("draft", 0) + 1}

    async def critic(board: dict[str, Any]) -> str:
        await a_waiting.wait()  # only returns if writer runs alongside it
        seen.append(("critic", dict(board)))
        return "ok" if board.get("draft", 0) >= 1 else "more"

    board = bf.Blackboard(
        lambda b: b.get("critic") == "ok", [writer, critic], max_rounds=5, provider="local"
    )
    result = await asyncio.wait_for(board.ainvoke({"topic": "t"}), 30)
    assert result == {"topic": "t", "draft": 2, "critic": "ok"}
    assert seen == [
        ("writer", {"topic": "t"}),
        ("critic", {"topic": "t"}),
        ("writer", {"topic": "t", "draft": 1, "critic": "more"}),
        ("critic", {"topic": "t", "draft": 1, "critic": "more"}),
    ]
    assert board.last_path == ("writer", "critic", "writer", "critic")


def test_blackboard_done_is_asked_first_and_a_plain_input_is_the_input_key(engine: str) -> None:
    calls: list[str] = []
    board = bf.Blackboard(lambda b: True, [recording(calls, "a")])
    assert board.invoke("q") == {"input": "q"} and calls == []


def test_blackboard_not_done_after_max_rounds_is_a_deadlock_with_the_board(engine: str) -> None:
    async def done(board: dict[str, Any]) -> bool:
        return board.get("n", 0) >= 10

    board = bf.Blackboard(done, {"inc": lambda b: {"n": b.get("n", 0) + 1}}, max_rounds=3)
    with pytest.raises(OrchestratorError) as info:
        board.invoke({})
    err = info.value
    assert err.code is ErrorCode.WORKFLOW_DEADLOCK and "3 round" in str(err)
    assert err.board == {"n": 3} and err.path == ("inc",) * 3  # type: ignore[attr-defined]
    assert bf.Blackboard(done, {"inc": lambda b: {"n": b.get("n", 0) + 5}}).invoke({}) == {"n": 10}


def test_blackboard_conflicts_are_invalid_state_unless_reduced() -> None:
    agents = {"x": lambda b: {"notes": ["x"]}, "y": lambda b: {"notes": ["y"]}, "z": lambda b: None}
    clash = bf.Blackboard(lambda b: "notes" in b, agents, provider="local")
    with pytest.raises(OrchestratorError) as info:
        clash.invoke({})
    assert info.value.code is ErrorCode.INVALID_STATE
    assert "'x' and 'y'" in str(info.value) and "'notes'" in str(info.value)
    reduced = bf.Blackboard(
        lambda b: "notes" in b, agents, reducers={"notes": operator.add}, provider="local"
    )
    assert reduced.invoke({}) == {"notes": ["x", "y"]}
    assert reduced.invoke({"notes": ["start"]}.copy()) == {"notes": ["start"]}  # done at once


def test_blackboard_agent_failure_names_the_first_failed_agent(engine: str) -> None:
    finished: list[str] = []

    def broken(board: dict[str, Any]) -> None:
        raise ValueError("bad board")

    def fine(board: dict[str, Any]) -> dict[str, Any]:
        finished.append("fine")
        return {"ok": True}

    board = bf.Blackboard(lambda b: False, {"fine": fine, "broken": broken}, name="bb-fail")
    with pytest.raises(OrchestratorError) as info:
        board.invoke({})
    assert info.value.code is ErrorCode.EXECUTION_FAILED and "'broken'" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError) and finished == ["fine"]


# ---------------------------------------------------------------- Handoff


def test_handoff_follows_transfers_and_records_the_path(engine: str) -> None:
    def triage(question: str) -> Any:
        if "refund" in question:
            return bf.handoff_to("billing")  # the same input goes on
        return bf.handoff_to("tech", {"ticket": question})

    def billing(question: str) -> str:
        return f"billing handled {question!r}"

    def tech(ticket: dict[str, str]) -> Any:
        return "rebooted" if "boot" in ticket["ticket"] else bf.handoff_to("billing", "escalated")

    desk = bf.Handoff({"triage": triage, "billing": billing, "tech": tech}, entry="triage")
    assert desk.invoke("a refund please") == "billing handled 'a refund please'"
    assert desk.last_path == ("triage", "billing")
    assert desk.invoke("it won't boot") == "rebooted" and desk.last_path == ("triage", "tech")
    assert desk.invoke("odd noise") == "billing handled 'escalated'"
    assert desk.last_path == ("triage", "tech", "billing")


def test_handoff_to_an_unknown_agent_names_it_and_the_agents(engine: str) -> None:
    desk = bf.Handoff({"triage": lambda q: bf.handoff_to("legal"), "billing": abs}, "triage")
    with pytest.raises(OrchestratorError) as info:
        desk.invoke("q")
    msg = str(info.value)
    assert info.value.code is ErrorCode.NOT_FOUND and "'legal'" in msg and "triage, billing" in msg
    assert info.value.path == ("triage",)  # type: ignore[attr-defined]


def test_handoff_allows_max_hops_transfers_and_no_more(engine: str) -> None:
    def ping(n: int) -> Any:
        return bf.handoff_to("pong", n + 1) if n < 3 else n

    def pong(n: int) -> Any:
        return bf.handoff_to("ping", n + 1) if n < 3 else n

    agents = {"ping": ping, "pong": pong}
    assert bf.Handoff(agents, "ping", max_hops=3).invoke(0) == 3  # three transfers
    loop = bf.Handoff(agents, "ping", max_hops=2)
    with pytest.raises(OrchestratorError) as info:
        loop.invoke(0)
    err = info.value
    assert err.code is ErrorCode.WORKFLOW_DEADLOCK and "max_hops=2" in str(err)
    assert err.path == ("ping", "pong", "ping")  # type: ignore[attr-defined]
    assert loop.last_path == ("ping", "pong", "ping")


def test_handoff_to_is_a_small_frozen_value() -> None:
    h = bf.handoff_to("billing", {"x": 1})
    assert (h.target, h.payload) == ("billing", {"x": 1})
    with pytest.raises(AttributeError):
        h.target = "other"  # type: ignore[misc]


# ---------------------------------------------------------------- hedge


class GatedClock:
    """An engine clock whose sleeps end only when the test opens the gate."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self.gate = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        await self.gate.wait()


def forever(name: str, cancelled: list[str], started: asyncio.Event | None = None) -> Any:
    async def agent(value: Any) -> Any:
        try:
            if started is not None:
                started.set()
            await asyncio.Event().wait()
        finally:
            cancelled.append(name)

    agent.__name__ = name
    return agent


async def test_hedge_primary_in_time_never_starts_the_secondary() -> None:
    clock, started = GatedClock(), []

    def secondary(x: int) -> int:
        started.append(x)
        return -1

    fast = bf.hedge(lambda x: x * 2, secondary, dt.timedelta(seconds=2), provider=_engine(clock))
    assert await fast.ainvoke(21) == 42
    assert clock.asked == [2.0] and started == [] and fast.last_path == ("primary",)


async def test_hedge_secondary_after_the_delay_wins_and_the_primary_is_cancelled() -> None:
    clock, cancelled = GatedClock(), []
    primary_started = asyncio.Event()

    async def secondary(x: int) -> str:
        return f"secondary:{x}"

    hedged = bf.hedge(
        forever("slow", cancelled, primary_started), secondary, 0.5, provider=_engine(clock)
    )
    call = asyncio.ensure_future(hedged.ainvoke(1))
    await primary_started.wait()
    assert not call.done() and cancelled == []
    clock.gate.set()  # the delay passes
    assert await call == "secondary:1"
    assert cancelled == ["slow"] and hedged.last_path == ("primary", "secondary")


async def test_hedge_primary_failure_starts_the_secondary_at_once() -> None:
    clock = GatedClock()

    def broken(x: int) -> int:
        raise ConnectionError("primary down")

    hedged = bf.hedge(broken, lambda x: x + 1, 60, provider=_engine(clock))
    assert await hedged.ainvoke(1) == 2  # the gate never opened
    assert clock.asked == [60.0]


async def test_hedge_primary_winning_after_the_delay_cancels_the_secondary() -> None:
    clock, cancelled = GatedClock(), []
    go, secondary_started = asyncio.Event(), asyncio.Event()

    async def primary(x: int) -> str:
        await go.wait()
        return "primary"

    hedged = bf.hedge(
        primary, forever("backup", cancelled, secondary_started), 0.1, provider=_engine(clock)
    )
    call = asyncio.ensure_future(hedged.ainvoke(1))
    clock.gate.set()
    await secondary_started.wait()
    go.set()
    assert await call == "primary" and cancelled == ["backup"]


def test_hedge_both_failing_raises_the_primary_error(engine: str) -> None:
    def primary(x: int) -> int:
        raise ValueError("primary error")

    def secondary(x: int) -> int:
        raise KeyError("secondary error")

    with pytest.raises(ValueError, match="primary error"):
        bf.hedge(primary, secondary, 0).invoke(1)


def test_hedge_waits_on_the_engine_clock() -> None:
    clock = FakeClock()
    hedged = bf.hedge(forever("p", []), lambda x: "backup", 5, provider=_engine(clock))
    assert hedged.invoke(1) == "backup" and clock.sleeps == [5.0]


def _engine(clock: Any) -> bf.LocalEngine:
    return bf.LocalEngine(sleep=clock.sleep)


def test_the_doc_page_snippets_run() -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "patterns.md").read_text()
    snippets = [block.split("```", 1)[0] for block in page.split("```python\n")[1:]]
    assert len(snippets) == 5
    namespace: dict[str, Any] = {}
    with bf.use_engine("local"):
        for snippet in snippets:
            exec(compile(snippet, "docs/patterns.md", "exec"), namespace)
