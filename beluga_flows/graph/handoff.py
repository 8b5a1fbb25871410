"""Handoffs: agents pass control to each other by name (a port of Beluga's
``orchestration/handoff.go``, where an agent's ``transfer_to_<name>`` tool call is
the handoff; here an agent returns :func:`handoff_to`).

Example::

    def triage(question):
        return bf.handoff_to("billing") if "refund" in question else "try rebooting"

    desk = bf.Handoff({"triage": triage, "billing": billing}, entry="triage")
    desk.invoke("I want a refund")
    desk.last_path        # ('triage', 'billing')

What an agent is, how its calls show on Prefect, ``last_path`` and ``.path``: see
:mod:`beluga_flows.graph.agents`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from beluga_flows._validate import config_error, positive_int
from beluga_flows.engine import Engine
from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.graph.agents import AgentPattern, Invocation

__all__ = ["Handoff", "HandoffTo", "handoff_to"]


@dataclass(frozen=True)
class HandoffTo:
    """An agent's answer "let ``target`` carry on with ``payload``" (see
    :func:`handoff_to`)."""

    target: str
    payload: Any


class _Same(enum.Enum):
    """ "The input this agent got": an enum, so that it survives pickling (a step's
    result is pickled in a durable workflow) as the same object."""

    INPUT = "input"


_SAME: Any = _Same.INPUT


def handoff_to(name: str, payload: Any = _SAME) -> HandoffTo:
    """Return this from an agent of a :class:`Handoff` to pass control to agent
    ``name`` with ``payload`` as its input (default: the input this agent got).

    Example::

        def triage(question: str):
            return bf.handoff_to("billing") if "refund" in question else "ask support"
    """
    if not isinstance(name, str) or not name:
        raise config_error("handoff", f"handoff target must be an agent name, got {name!r}")
    return HandoffTo(name, payload)


class Handoff(AgentPattern):
    """Peer-to-peer transfers: ``entry`` runs first; an agent returning
    :func:`handoff_to(name, payload) <handoff_to>` passes control to ``name``; any
    other value is the result.

    A target that is not an agent → ``NOT_FOUND`` naming it and the agents. More
    than ``max_hops`` transfers in one invocation → ``WORKFLOW_DEADLOCK`` (Beluga
    counts hops the same way but calls it invalid input; a transfer loop is a loop
    that does not end, as a graph's ``max_iterations``). The agents visited are
    ``last_path`` (and an error's ``.path``).

    Example::

        desk = bf.Handoff({"triage": triage, "billing": billing}, entry="triage")
        desk.invoke("I want a refund")
        desk.last_path        # ('triage', 'billing')
    """

    kind = "handoff"

    def __init__(
        self,
        agents: Any,
        entry: str,
        max_hops: int = 10,
        *,
        name: str | None = None,
        provider: str | Engine | None = None,
    ) -> None:
        super().__init__(agents, name=name, provider=provider)
        if not isinstance(entry, str) or entry not in self.agents:
            raise config_error(
                self.kind, f"entry {entry!r} is not an agent (agents: {', '.join(self.agents)})"
            )
        self.entry = entry
        self.max_hops = positive_int(self.kind, "max_hops", max_hops, maximum=10_000)

    async def _run(self, run: Invocation, value: Any) -> Any:
        agent, hops = self.entry, 0
        while True:
            out = await run.call(agent, value)
            if not isinstance(out, HandoffTo):
                return out
            if out.target not in self.agents:
                raise OrchestratorError(
                    self.kind,
                    f"agent {agent!r} handed off to unknown agent {out.target!r} "
                    f"(agents: {', '.join(self.agents)})",
                    ErrorCode.NOT_FOUND,
                    agent=agent,
                )
            hops += 1
            if hops > self.max_hops:
                raise OrchestratorError(
                    self.kind,
                    f"handoff {self.name!r} exceeded max_hops={self.max_hops} "
                    f"(path: {' -> '.join([*run.path, out.target])})",
                    ErrorCode.WORKFLOW_DEADLOCK,
                )
            agent = out.target
            value = value if out.payload is _SAME else out.payload
