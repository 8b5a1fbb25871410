"""How a :class:`~beluga_flows.Supervisor` picks the agent for each round.

A port of Beluga's ``StrategyFunc`` (``orchestration/supervisor.go``): a strategy
looks at the round's input and the agents' names and names one agent, or ``None``
to stop (the supervisor then returns the input of that round). A strategy is a
small object shared by every invocation of the supervisors that hold it, so its
state (a rotation, counts) spans invocations; it is thread- and task-safe.

* :func:`round_robin` — the next agent each time, across invocations too.
* :func:`load_balanced` — the agent with the fewest calls in flight; ties go to
  the one called least so far, then to the first in order. (Beluga counts calls
  started; counting the calls still running answers "who is free now", which is
  what matters once calls overlap, and is the same when they do not.)
* :func:`delegate_by_skill` — the agent whose skills the input names (see there).

Any callable ``strategy(input, names) -> name | None`` is a strategy too.

Example::

    sup = bf.Supervisor(bf.delegate_by_skill({"coder": ["python", "sql"],
                                              "writer": ["essay"]}),
                        {"coder": code_agent, "writer": write_agent})
    sup.invoke({"skill": "sql", "task": "top customers"})   # → code_agent
    sup.invoke("write an essay on whales")                  # → write_agent
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from beluga_flows._validate import config_error
from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = ["Strategy", "delegate_by_skill", "load_balanced", "round_robin"]


class Strategy:
    """Picks the agent of each supervisor round (subclass and override :meth:`select`)."""

    def select(self, input: Any, agents: Sequence[str], round: int) -> str | None:
        """The name of the agent to run on ``input`` in ``round`` (0-based), or
        ``None`` to stop and return ``input``."""
        raise NotImplementedError

    def release(self, agent: str) -> None:
        """The call :meth:`select` picked ``agent`` for has ended (success or not)."""

    def check(self, agents: Sequence[str]) -> None:
        """Refuse (``INVALID_CONFIG``) agents this strategy cannot work with."""


class _Callable(Strategy):
    def __init__(self, fn: Callable[[Any, Sequence[str]], str | None]) -> None:
        self.fn = fn

    def select(self, input: Any, agents: Sequence[str], round: int) -> str | None:
        return self.fn(input, agents)

    def __repr__(self) -> str:
        return f"strategy({self.fn!r})"


def as_strategy(value: Any) -> Strategy:
    """A :class:`Strategy`, or a plain callable ``(input, names) -> name | None``."""
    if isinstance(value, Strategy):
        return value
    if callable(value) and not isinstance(value, type):
        return _Callable(value)
    raise config_error(
        "supervisor",
        "strategy must be bf.round_robin(), bf.load_balanced(), bf.delegate_by_skill(...) "
        f"or a callable (input, agent_names) -> name, got {value!r}",
    )


class _RoundRobin(Strategy):
    def __init__(self) -> None:
        self._turns = itertools.count()
        self._lock = threading.Lock()

    def select(self, input: Any, agents: Sequence[str], round: int) -> str | None:
        with self._lock:
            turn = next(self._turns)
        return agents[turn % len(agents)]

    def __repr__(self) -> str:
        return "round_robin()"


def round_robin() -> Strategy:
    """Each round the next agent in order, continuing across invocations.

    Example::

        sup = bf.Supervisor(bf.round_robin(), [a, b, c])
        [sup.invoke(x) for x in "xyz"]     # a, b and c ran once each
    """
    return _RoundRobin()


class _LoadBalanced(Strategy):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight: dict[str, int] = {}
        self.calls: dict[str, int] = {}

    def select(self, input: Any, agents: Sequence[str], round: int) -> str | None:
        with self._lock:
            order = {name: i for i, name in enumerate(agents)}
            best = min(
                agents,
                key=lambda n: (self.in_flight.get(n, 0), self.calls.get(n, 0), order[n]),
            )
            self.in_flight[best] = self.in_flight.get(best, 0) + 1
            self.calls[best] = self.calls.get(best, 0) + 1
            return best

    def release(self, agent: str) -> None:
        with self._lock:
            self.in_flight[agent] = max(0, self.in_flight.get(agent, 0) - 1)

    def __repr__(self) -> str:
        return "load_balanced()"


def load_balanced() -> Strategy:
    """The agent with the fewest calls in flight (ties: fewest calls so far, then
    the first in order). Its counts are shared by every supervisor holding it.

    Example::

        pool = bf.Supervisor(bf.load_balanced(), [worker_1, worker_2])
        pool.batch(jobs)       # concurrent jobs spread over the free workers
    """
    return _LoadBalanced()


class _BySkill(Strategy):
    def __init__(self, skills: Mapping[str, tuple[str, ...]]) -> None:
        self.skills = skills
        self._patterns = {
            agent: [re.compile(rf"(?<!\w){re.escape(s)}(?!\w)", re.IGNORECASE) for s in known]
            for agent, known in skills.items()
        }

    def check(self, agents: Sequence[str]) -> None:
        unknown = [a for a in self.skills if a not in agents]
        if unknown:
            raise config_error(
                "supervisor",
                f"delegate_by_skill names unknown agent {unknown[0]!r} "
                f"(agents: {', '.join(agents)})",
            )

    def _all(self) -> str:
        return ", ".join(f"{a}: {list(s)}" for a, s in self.skills.items())

    def select(self, input: Any, agents: Sequence[str], round: int) -> str | None:
        if isinstance(input, Mapping) and "skill" in input:
            wanted = str(input["skill"]).strip().lower()
            for agent in agents:
                if wanted in (s.lower() for s in self.skills.get(agent, ())):
                    return agent
            raise OrchestratorError(
                "supervisor",
                f"no agent has skill {input['skill']!r} (skills: {self._all()})",
                ErrorCode.NOT_FOUND,
            )
        text = _text(input)
        scores = {
            agent: sum(1 for p in self._patterns.get(agent, ()) if p.search(text))
            for agent in agents
        }
        best = max(agents, key=lambda a: scores[a])  # the first of equals wins
        if scores[best]:
            return best
        if round > 0:
            return None  # a later round's output names no skill: it is the answer
        raise OrchestratorError(
            "supervisor",
            f"the input names no known skill (skills: {self._all()}): {text[:80]!r}",
            ErrorCode.NOT_FOUND,
        )

    def __repr__(self) -> str:
        return f"delegate_by_skill({dict(self.skills)!r})"


def _text(input: Any) -> str:
    if isinstance(input, str):
        return input
    if isinstance(input, Mapping):
        for key in ("task", "input"):
            if isinstance(input.get(key), str):
                return str(input[key])
    return str(input)


def delegate_by_skill(skills: Mapping[str, Any]) -> Strategy:
    """The agent whose skills the input names; ``skills`` maps agent names to skill
    keywords (a list, or one string).

    * A mapping input with a ``"skill"`` key names it exactly (case-insensitive).
    * Any other input is text (a ``str``, or a mapping's ``"task"`` or ``"input"``
      string, else ``str(input)``): the agent with the most of its skills in the text
      as whole words wins; the first in order of equals.
    * A skill nobody has → ``NOT_FOUND`` listing the skills. In rounds after the
      first (``max_rounds > 1``) an output that names no skill ends the run instead:
      it is the answer.

    Example::

        bf.delegate_by_skill({"math": ["sum", "integral"], "search": "lookup"})
    """
    if not isinstance(skills, Mapping) or not skills:
        raise config_error(
            "supervisor", f"skills must be a dict of agent name -> [skill, ...], got {skills!r}"
        )
    table: dict[str, tuple[str, ...]] = {}
    for agent, known in skills.items():
        items = (known,) if isinstance(known, str) else known
        if not isinstance(agent, str) or not isinstance(items, Sequence) or not items:
            raise config_error(
                "supervisor", f"skills of {agent!r} must be a non-empty list, got {known!r}"
            )
        if not all(isinstance(s, str) and s.strip() for s in items):
            raise config_error(
                "supervisor", f"skills of {agent!r} must be non-empty strings, got {known!r}"
            )
        table[agent] = tuple(s.strip() for s in items)
    return _BySkill(table)
