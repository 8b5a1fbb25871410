"""Workflows whose bodies are graphs (API.md §12), run by tests/test_workflow_graphs.py.

Nodes append to a ledger file so the tests see what ran, how often and in which order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import beluga_flows as bf
from tests.workflow_app import note


def _once(ledger: str, what: str) -> bool:
    """True the first time ``what`` is broken (a ``<ledger>.<what>`` flag file is used up)."""
    flag = Path(f"{ledger}.{what}")
    if flag.exists():
        flag.unlink()
        return True
    return False


def _node(name: str, fails_once: bool = False) -> Any:
    def run(state: dict[str, Any]) -> dict[str, Any]:
        note(state["ledger"], f"start {name}")
        if fails_once and _once(state["ledger"], name):
            raise RuntimeError(f"{name} is broken")
        note(state["ledger"], f"done {name}")
        return {name: name.upper()}

    return run


# a, then b and c in parallel (c fails once), then d
DIAMOND = bf.Graph(name="diamond")
DIAMOND.add_node("a", _node("a"))
DIAMOND.add_node("b", _node("b"))
DIAMOND.add_node("c", _node("c", fails_once=True))
DIAMOND.add_node("d", _node("d"))
DIAMOND.add_edge(bf.START, "a")
DIAMOND.add_edge("a", "b")
DIAMOND.add_edge("a", "c")
DIAMOND.add_edge("b", "d")
DIAMOND.add_edge("c", "d")


def diamond_body(ledger: str) -> str:
    state = DIAMOND.invoke({"ledger": ledger})
    return "".join(state[k] for k in "abcd")


def review(state: dict[str, Any]) -> dict[str, Any]:
    note(state["ledger"], "review asks")
    decision = bf.request_approval("publish the report?")
    note(state["ledger"], f"review got {decision.approved}")
    return {"approved": decision.approved, "reviewer": decision.reviewer}


def crunch(state: dict[str, Any]) -> dict[str, Any]:
    note(state["ledger"], "crunch done")
    return {"numbers": sum(range(10))}


def publish(state: dict[str, Any]) -> dict[str, Any]:
    note(state["ledger"], "publish")
    return {"published": state["approved"]}


REVIEWED = bf.Graph(name="reviewed")
REVIEWED.add_node("review", review)
REVIEWED.add_node("crunch", crunch)
REVIEWED.add_node("publish", publish)
REVIEWED.add_edge(bf.START, "review")
REVIEWED.add_edge(bf.START, "crunch")
REVIEWED.add_edge("review", "publish")
REVIEWED.add_edge("crunch", "publish")


def reviewed_body(ledger: str) -> dict[str, Any]:
    state = REVIEWED.invoke({"ledger": ledger})
    return {k: state[k] for k in ("approved", "reviewer", "numbers", "published")}


@bf.step
def charge(name: str, ledger: str) -> str:
    note(ledger, f"charge {name}")
    return name


@bf.step
def refund(name: str, ledger: str) -> None:
    note(ledger, f"refund {name}")


def _charging(name: str) -> Any:
    def run(state: dict[str, Any]) -> dict[str, Any]:
        receipt = charge(name, state["ledger"])
        bf.compensate(lambda: refund(receipt, state["ledger"]))
        return {name: receipt}

    return run


async def hold(state: dict[str, Any]) -> dict[str, Any]:
    note(state["ledger"], "hold waits")
    go = await bf.wait_for_signal("go")
    return {"go": go}


CHARGES = bf.Graph(name="charges")
CHARGES.add_node("first", _charging("first"))
CHARGES.add_node("second", _charging("second"))
CHARGES.add_node("hold", hold)
CHARGES.add_edge(bf.START, "first")
CHARGES.add_edge("first", "second")
CHARGES.add_edge("second", "hold")


def charges_body(ledger: str) -> dict[str, Any]:
    return dict(CHARGES.invoke({"ledger": ledger}))


def take(name: str, fails_once: bool = False) -> Any:
    def run(state: dict[str, Any]) -> dict[str, Any]:
        got = bf.wait_for_signal("item", timeout=60)
        note(state["ledger"], f"{name} took {got}")
        if fails_once and _once(state["ledger"], name):
            raise RuntimeError(f"{name} is broken")
        return {name: got}

    return run


TAKERS = bf.Graph(name="takers")
TAKERS.add_node("x", take("x"))
TAKERS.add_node("y", take("y", fails_once=True))
TAKERS.add_edge(bf.START, "x")
TAKERS.add_edge("x", "y")


def takers_body(ledger: str) -> dict[str, Any]:
    state = TAKERS.invoke({"ledger": ledger})
    return {"x": state["x"], "y": state["y"]}


diamond = bf.Workflow(diamond_body, name="wf-graph-diamond", mode="in_process")
reviewed = bf.Workflow(reviewed_body, name="wf-graph-reviewed", mode="in_process")
charges = bf.Workflow(charges_body, name="wf-graph-charges", mode="in_process")
takers = bf.Workflow(takers_body, name="wf-graph-takers", mode="in_process")


def _link(name: str, fails_once: bool = False) -> Any:
    def run(state: dict[str, Any]) -> dict[str, Any]:
        note(state["ledger"], f"link {name}")
        if fails_once and _once(state["ledger"], name):
            raise RuntimeError(f"{name} is broken")
        return {**state, "path": state.get("path", "") + name}

    run.__name__ = f"link_{name}"
    return run


LINKS = bf.Chain([_link("p"), _link("q", fails_once=True), _link("r")], name="links")


def links_body(ledger: str) -> str:
    return str(LINKS.invoke({"ledger": ledger})["path"])


links = bf.Workflow(links_body, name="wf-chain-links", mode="in_process")
