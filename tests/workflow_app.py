"""Workflows the workflow tests run, in this process, in crash workers and served.

Steps append to a ledger file, so every process can see what ran and how often.
"""

from __future__ import annotations

import time
from pathlib import Path

import beluga_flows as bf


def note(ledger: str, line: str) -> None:
    with Path(ledger).open("a") as fh:
        fh.write(line + "\n")


def lines(ledger: str) -> list[str]:
    path = Path(ledger)
    return path.read_text().splitlines() if path.exists() else []


@bf.step
def work(i: int, ledger: str, delay: float) -> int:
    note(ledger, f"start {i}")
    time.sleep(delay)
    broken = Path(ledger + ".broken")
    if i == 5 and broken.exists():  # fails once: the flag is used up
        broken.unlink()
        raise RuntimeError("step 5 is broken")
    note(ledger, f"done {i}")
    return i * i


def ten_steps(ledger: str, delay: float = 0.0, n: int = 10) -> int:
    """n steps in a row; the result is the sum of their squares."""
    return sum(work(i, ledger, delay) for i in range(n))


@bf.step
def act(name: str, ledger: str) -> str:
    note(ledger, f"do {name}")
    return name


@bf.step
def undo(name: str, ledger: str) -> None:
    note(ledger, f"undo {name}")
    if name == "fragile":
        raise RuntimeError(f"cannot undo {name}")


def signalled(ledger: str, expect: int = 2, fail: str = "") -> dict[str, object]:
    """Two compensated steps, then ``expect`` "item" signals, then a last step."""
    got: list[object] = []

    @bf.query_handler("received")
    def received(prefix: str = "") -> list[str]:
        return [f"{prefix}{g}" for g in got]

    for name in ("first", "second"):
        done = act(name, ledger)
        bf.compensate(lambda done=done: undo(done, ledger))
    for _ in range(expect):
        got.append(bf.wait_for_signal("item", timeout=60))
    if fail:
        done = act(fail, ledger)
        bf.compensate(lambda done=done: undo(done, ledger))
        raise bf.OrchestratorError("order", f"{fail} went wrong", bf.ErrorCode.DEPENDENCY_FAILED)
    act("last", ledger)
    return {"items": got}


@bf.step
async def act_async(name: str, ledger: str) -> str:
    note(ledger, f"do {name}")
    return name


async def approval(ledger: str, timeout: float = 60.0) -> str:
    """An async workflow: approval with a default branch on timeout."""
    await act_async("before", ledger)
    try:
        decision = await bf.request_approval("ship it?", timeout=timeout)
    except bf.OrchestratorError as err:
        if err.code is not bf.ErrorCode.TIMEOUT:
            raise
        return "timed out: default branch"
    await act_async("after", ledger)
    return f"approved={decision.approved} by {decision.reviewer} ({decision.comment})"


def signal_then_step(ledger: str) -> object:
    """Wait for a signal, then a step that fails once: a retry replays the signal."""
    got = bf.wait_for_signal("item", timeout=60)
    work(5, ledger, 0.0)
    return got


steps = bf.Workflow(ten_steps, name="wf-ten-steps", mode="in_process")
retried = bf.Workflow(ten_steps, name="wf-retried", retries=1, mode="in_process")
replayed = bf.Workflow(signal_then_step, name="wf-replayed", retries=1, mode="in_process")
timed = bf.Workflow(ten_steps, name="wf-timed", timeout=1.0, mode="in_process")
signals = bf.Workflow(signalled, name="wf-signals", mode="in_process")
approvals = bf.Workflow(approval, name="wf-approval", mode="in_process")
served = bf.Workflow(signalled, name="wf-served", mode="served")
served_steps = bf.Workflow(ten_steps, name="wf-served-steps", mode="served")
handoff = bf.Workflow(ten_steps, name="wf-handoff", mode="served")


async def two_approvals(first_timeout: float | None = None) -> dict[str, str]:
    """Two approval requests with a signal between them: an answer to the first never
    answers the second."""
    stage = {"at": "first"}

    @bf.query_handler("stage")
    def at() -> str:
        return stage["at"]

    try:
        first = await bf.request_approval("first?", timeout=first_timeout)
        got_first = f"{first.approved} by {first.reviewer}"
    except bf.OrchestratorError as err:
        if err.code is not bf.ErrorCode.TIMEOUT:
            raise
        got_first = "timed out"
    stage["at"] = "between"
    await bf.wait_for_signal("go", timeout=120)
    stage["at"] = "second"
    second = await bf.request_approval("second?", timeout=120)
    return {"first": got_first, "second": f"{second.approved} by {second.reviewer}"}


def approve_then_fail(ledger: str) -> str:
    """An approval, then a step that fails once: the retry must not ask again."""
    decision = bf.request_approval("go ahead?", timeout=120)
    work(5, ledger, 0.0)
    return str(decision.reviewer)


@bf.step
def careful_undo(name: str, ledger: str) -> None:
    """An undo that holds while ``<ledger>.hold.<name>`` exists (a crash test kills it)."""
    note(ledger, f"undoing {name}")
    deadline = time.monotonic() + 60
    while Path(f"{ledger}.hold.{name}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    note(ledger, f"undone {name}")


def refund_flow(ledger: str) -> str:
    """Reserve and charge (each with an undo), then step 5 fails once, then ship."""
    for name in ("reserve", "charge"):
        done = act(name, ledger)
        bf.compensate(lambda done=done: careful_undo(done, ledger))
    work(5, ledger, 0.0)
    return act("ship", ledger)


approvals_twice = bf.Workflow(two_approvals, name="wf-two-approvals", mode="in_process")
approval_retried = bf.Workflow(
    approve_then_fail, name="wf-approval-retried", retries=1, mode="in_process"
)
refunds = bf.Workflow(refund_flow, name="wf-refunds", mode="in_process")


def _node(name: str) -> object:
    def run(state: dict[str, object]) -> dict[str, int]:
        ledger = str(state["ledger"])
        note(ledger, f"start node {name}")
        time.sleep(float(state["delay"]))  # type: ignore[arg-type]
        note(ledger, f"done node {name}")
        return {name: ord(name)}

    return run


INNER = bf.Graph(name="inner")
for _name in "abcd":
    INNER.add_node(_name, _node(_name))
INNER.add_edge(bf.START, "a")
INNER.add_edge("a", "b")
INNER.add_edge("a", "c")
INNER.add_edge("b", "d")
INNER.add_edge("c", "d")


def graph_and_steps(ledger: str, delay: float = 0.3) -> int:
    """Steps, a graph (a, then b and c in parallel, then d), more steps."""
    total = sum(work(i, ledger, delay) for i in range(3))
    state = INNER.invoke({"ledger": ledger, "delay": delay})
    total += sum(int(state[k]) for k in "abcd")
    return total + sum(work(i, ledger, delay) for i in range(3, 6))


mixed = bf.Workflow(graph_and_steps, name="wf-graph-and-steps", mode="in_process")
