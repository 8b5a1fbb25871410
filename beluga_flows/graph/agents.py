"""Agent patterns: a supervisor and a blackboard (ported from Beluga's
``orchestration`` package: ``supervisor.go``, ``blackboard.go``); handoffs live in
:mod:`beluga_flows.graph.handoff`, hedged calls in :mod:`beluga_flows.graph.hedge`.

Example::

    team = {"researcher": research, "writer": write}
    bf.Supervisor(bf.round_robin(), team, max_rounds=2).invoke("whales")
    bf.Blackboard(lambda board: "draft" in board, team).invoke({"topic": "whales"})
    bf.Handoff({"triage": triage, "billing": billing}, entry="triage").invoke("refund?")

An agent is any callable or Runnable. Given as a dict, its key is its name; given as
a list, its own name (a step's or Runnable's ``name``, a function's ``__name__``).
Each agent call is a step (a task run on Prefect named ``<agent>-<n>``, its n-th call
in the invocation): a plain function becomes a tracked step named after the agent,
a ``@bf.step`` is renamed to it with every option kept, any other Runnable (a chain,
a graph) runs as itself. Invoked outside a flow on Prefect, a pattern starts its own
flow run (as a chain does). In metrics a pattern run counts as a graph run (as
:class:`~beluga_flows.Router` does); its span is ``<pattern>.invoke``.

``last_path`` holds the agents the last finished invocation called, in order; an
error raised by a pattern carries ``.path`` (that invocation's own).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from beluga_flows import _sync, telemetry
from beluga_flows._validate import config_error, positive_int
from beluga_flows.core import middleware
from beluga_flows.core.runnable import Runnable
from beluga_flows.engine import Engine, get_engine, use_engine
from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.graph.patterns import _call, _check
from beluga_flows.graph.strategies import as_strategy

__all__ = ["AgentPattern", "Blackboard", "Invocation", "Supervisor", "agent_members"]


def agent_members(owner: str, agents: Any, *, rename: bool = True) -> dict[str, Runnable]:
    """The agents by name, each as a tracked step named after it (or a Runnable);
    ``rename=False`` keeps a step's or function's own name for its task runs."""
    if isinstance(agents, Mapping):
        named = list(agents.items())
    elif isinstance(agents, Sequence) and not isinstance(agents, str | bytes):
        named = [(_own_name(owner, a), a) for a in agents]
    else:
        raise config_error(owner, f"agents must be a list or a dict of agents, got {agents!r}")
    if not named:
        raise config_error(owner, "needs at least one agent")
    members: dict[str, Runnable] = {}
    for name, agent in named:
        if not isinstance(name, str) or not name:
            raise config_error(owner, f"agent names must be non-empty strings, got {name!r}")
        if name in members:
            raise config_error(owner, f"two agents are named {name!r}: give them as a dict")
        own = name if rename else None
        members[name] = _check(owner, f"agent {name!r}", agent, name=own, track=True)
    return members


def _own_name(owner: str, agent: Any) -> str:
    name = getattr(agent, "name", None) if isinstance(agent, Runnable) else None
    return str(name or getattr(agent, "__name__", None) or type(agent).__name__)


class Invocation:
    """One invocation of a pattern: its engine, and the agents it called so far."""

    def __init__(self, pattern: AgentPattern, engine: Engine) -> None:
        self.pattern = pattern
        self.engine = engine
        self.path: list[str] = []
        self.calls: dict[str, int] = {}

    async def call(self, agent: str, value: Any) -> Any:
        """Run ``agent`` on ``value`` as a step labelled ``<agent>-<n>``; a failure
        → ``EXECUTION_FAILED`` naming the agent (``.agent``), the error as cause."""
        n = self.calls[agent] = self.calls.get(agent, 0) + 1
        self.path.append(agent)
        p = self.pattern
        token = middleware.RUN_LABEL.set(f"{agent}-{n}")
        try:
            attrs = {"pattern": p.kind, "pattern.name": p.name, "step.name": agent}
            return await _call(p.agents[agent], value, "agent.call", attrs)
        except Exception as err:
            raise OrchestratorError(
                p.kind,
                f"{p.kind} {p.name!r}: agent {agent!r} failed: {err}",
                ErrorCode.EXECUTION_FAILED,
                agent=agent,
            ) from err
        finally:
            middleware.RUN_LABEL.reset(token)


class AgentPattern(Runnable):
    """What the agent patterns share: agents by name, the engine, the flow run, the
    span, ``last_path``. Subclasses implement :meth:`_run`."""

    kind = "agents"
    renames = True  # an agent's steps take the agent's name

    def __init__(self, agents: Any, *, name: str | None, provider: Any) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise config_error(self.kind, f"name must be a non-empty string, got {name!r}")
        self.agents = agent_members(self.kind, agents, rename=self.renames)
        self.name = name or self.kind
        self.provider = provider
        if provider is not None:
            get_engine(provider)  # unknown provider → NOT_FOUND now, not at run time
        self.last_path: tuple[str, ...] = ()

    async def ainvoke(self, input: Any, **opts: Any) -> Any:
        """Run once; ``provider=`` overrides the pattern's provider for this call."""
        engine = get_engine(opts.get("provider") or self.provider)
        attrs = {"pattern": self.kind, "pattern.agents": len(self.agents)}
        async with telemetry.execution(
            "graph", self.name, attrs=attrs, span_name=f"{self.kind}.invoke", input=input
        ) as sp:
            output = await engine.in_flow(
                self.name,
                lambda value: self._invocation(engine, value),
                input,
                tags=(f"beluga:{self.kind}",),
            )
            telemetry.record_value(sp, "output", output)
            return output

    async def _invocation(self, engine: Engine, value: Any) -> Any:
        run = Invocation(self, engine)
        try:
            with use_engine(engine):
                return await self._run(run, value)
        except OrchestratorError as err:
            err.path = tuple(run.path)  # type: ignore[attr-defined]
            raise
        finally:
            self.last_path = tuple(run.path)

    async def _run(self, run: Invocation, value: Any) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.agents)!r}, name={self.name!r})"


class Supervisor(AgentPattern):
    """Delegate to one agent per round, picked by ``strategy``; each round's output is
    the next round's input, for up to ``max_rounds`` rounds (Beluga's semantics).

    The strategy (:func:`~beluga_flows.round_robin`, :func:`~beluga_flows.load_balanced`,
    :func:`~beluga_flows.delegate_by_skill`, or a callable ``(input, names) -> name``)
    may answer ``None`` to stop early: the round's input is then the output. It
    naming an unknown agent → ``NOT_FOUND``; an agent failing → ``EXECUTION_FAILED``
    naming it. With ``max_rounds=1`` (the default) it is a dispatcher.

    Example::

        sup = bf.Supervisor(bf.round_robin(), {"draft": draft, "edit": edit}, max_rounds=2)
        sup.invoke("whales")          # edit(draft("whales"))
    """

    kind = "supervisor"

    def __init__(
        self,
        strategy: Any,
        agents: Any,
        max_rounds: int = 1,
        *,
        name: str | None = None,
        provider: str | Engine | None = None,
    ) -> None:
        self.strategy = as_strategy(strategy)
        super().__init__(agents, name=name, provider=provider)
        self.max_rounds = positive_int(self.kind, "max_rounds", max_rounds, maximum=10_000)
        self.strategy.check(list(self.agents))

    async def _run(self, run: Invocation, value: Any) -> Any:
        names = list(self.agents)
        for round in range(self.max_rounds):
            agent = self.strategy.select(value, names, round)
            if agent is None:
                return value
            if agent not in self.agents:
                raise OrchestratorError(
                    self.kind,
                    f"strategy picked unknown agent {agent!r} (agents: {', '.join(names)})",
                    ErrorCode.NOT_FOUND,
                )
            try:
                value = await run.call(agent, value)
            finally:
                self.strategy.release(agent)
        return value


class Blackboard(AgentPattern):
    """Agents collaborate on a shared board (a dict) until ``done(board)``.

    The board starts as a copy of a mapping input, else ``{"input": input}``. Each
    round, if ``done(board)`` is not yet true, every agent gets a copy of the board
    as it was when the round began (they run concurrently) and returns updates: a
    dict merged into the board, ``None`` for nothing, or any other value stored
    under the agent's name (Beluga's rule). Two agents writing the same key in one
    round → ``INVALID_STATE`` naming both, unless ``reducers`` names the key
    (``{"notes": operator.add}``: combined in agent order). ``done`` (sync or async)
    is asked before each round and after the last: still not done after
    ``max_rounds`` rounds → ``WORKFLOW_DEADLOCK`` (as a graph loop over its
    ``max_iterations``; Beluga returns the board instead), the board on ``.board``.
    An agent failing → ``EXECUTION_FAILED`` naming it (the first in agent order),
    after the round's other agents have finished. The result is the final board.

    Example::

        board = bf.Blackboard(lambda b: b.get("approved"), {"writer": w, "critic": c})
        board.invoke({"topic": "whales"})
    """

    kind = "blackboard"

    def __init__(
        self,
        done: Callable[[dict[str, Any]], Any],
        agents: Any,
        max_rounds: int = 10,
        *,
        reducers: Mapping[str, Callable[[Any, Any], Any]] | None = None,
        name: str | None = None,
        provider: str | Engine | None = None,
    ) -> None:
        if not callable(done):
            raise config_error(self.kind, f"done must be a callable (board) -> bool, got {done!r}")
        if reducers is not None and not (
            isinstance(reducers, Mapping) and all(callable(f) for f in reducers.values())
        ):
            raise config_error(self.kind, f"reducers must be a dict of callables, got {reducers!r}")
        super().__init__(agents, name=name, provider=provider)
        self.done = done
        self.max_rounds = positive_int(self.kind, "max_rounds", max_rounds, maximum=10_000)
        self.reducers = dict(reducers or {})

    async def _run(self, run: Invocation, value: Any) -> Any:
        board = dict(value) if isinstance(value, Mapping) else {"input": value}
        for round in range(self.max_rounds + 1):
            if await self._done(board):
                return board
            if round == self.max_rounds:
                break
            snapshot = dict(board)
            results = await asyncio.gather(
                *(run.call(agent, dict(snapshot)) for agent in self.agents),
                return_exceptions=True,
            )
            for r in results:
                if isinstance(r, BaseException) and not isinstance(r, Exception):
                    raise r  # cancellation ends the run as it is
            failed = next((r for r in results if isinstance(r, Exception)), None)
            if failed is not None:
                raise failed
            board = self._merge(board, round, dict(zip(self.agents, results, strict=True)))
        err = OrchestratorError(
            self.kind,
            f"blackboard {self.name!r} not done after {self.max_rounds} round(s)",
            ErrorCode.WORKFLOW_DEADLOCK,
        )
        err.board = board  # type: ignore[attr-defined]
        raise err

    async def _done(self, board: dict[str, Any]) -> bool:
        return bool(await _sync.settled(self.done(dict(board))))

    def _merge(self, board: dict[str, Any], round: int, outputs: dict[str, Any]) -> dict[str, Any]:
        writers: dict[str, str] = {}
        for agent, out in outputs.items():
            updates = out if isinstance(out, Mapping) else {} if out is None else {agent: out}
            for key, new in updates.items():
                reducer = self.reducers.get(key)
                if reducer is not None:
                    board[key] = reducer(board[key], new) if key in board else new
                    continue
                if key in writers:
                    raise OrchestratorError(
                        self.kind,
                        f"agents {writers[key]!r} and {agent!r} both wrote {key!r} in round "
                        f"{round + 1}; give {key!r} a reducer (Blackboard(reducers={{...}}))",
                        ErrorCode.INVALID_STATE,
                        agents=(writers[key], agent),
                    )
                writers[key] = agent
                board[key] = new
        return board
