"""The live state of one workflow run, as its own code sees it. No I/O, no Prefect.

A :class:`LiveRun` is what ``wait_for_signal``, ``compensate``, ``query_handler``
and every step call inside a workflow talk to. The engine adapter fills it from the
outside (signals, cancel and terminate requests arrive through its watcher) and
reads it back (compensations to run, query handlers to answer).

Durability lives here too, as pure bookkeeping: each step call inside a workflow
gets a *label* (``charge``, ``charge-2`` …, its task-run name) and a *durable key*
derived from (workflow id, execution, step, input, occurrence). The adapter persists
the step's result under that key; a resumed run computes the same keys in the same
order and finds the results instead of running the steps again.

Approvals are numbered per attempt (the n-th ``request_approval`` of a run is
request n, the same in every replay). An answer is addressed to one request and a
decision, once taken, is recorded for that request only: a late answer, or a second
reviewer's, never answers a later, unrelated request.

A run *rolling back* (resumed after a crash during its compensations, or resumed
with a cancel pending) replays its body only as far as its recorded steps reach:
the first step, signal or approval with no record stops it (:class:`RollbackStop`),
then its compensations run, each at most once.

A step running inside a workflow run (a graph node, a chain step, a step the body
calls) has a :class:`NodeScope`: what its code registers there — compensations,
approvals (request ``<label>/<n>``), signals it takes — belongs to that step
execution, not to the order in which parallel branches happen to run. Its
compensations are stored with its result (:class:`Recorded`), and each signal it
takes is *claimed* under ``<label>/<name>/<n>`` (the claim is logged), so a resumed
run that finds the step completed registers the same undos and never hands the
same signal to another step.

Cancel and terminate are control flow, not errors: they derive from
:class:`BaseException` so ``except Exception`` in user code, retries and breakers
never swallow them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = [
    "ATTEMPT",
    "CURRENT",
    "NODE",
    "CancelRequested",
    "Control",
    "LiveRun",
    "NodeScope",
    "Recorded",
    "RollbackStop",
    "StepStatus",
    "Terminated",
    "current",
]


class StepStatus(StrEnum):
    """The status of one step of a workflow (``wf.query(..., "steps")``)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    WAITING = "waiting"
    RETRYING = "retrying"
    CANCELLED = "cancelled"


class Control(BaseException):
    """Stop the workflow body now (not an error: nothing retries or catches it)."""


class CancelRequested(Control):
    """The run was asked to cancel: stop at this step boundary, then compensate."""


class Terminated(Control):
    """The run was terminated: stop, run nothing more."""


class RollbackStop(Control):
    """A rolling-back replay reached work with no record: stop, then compensate."""


@dataclass(eq=False)
class LiveRun:
    """One running workflow execution, seen from inside.

    ``execution`` names the lineage of runs that share step results: a fresh
    ``execute()`` starts a new one, ``resume()`` continues the old one.
    """

    workflow_id: str
    run_id: str
    execution: str
    # (label, identity, undo): the label names its task run, the identity is what its
    # durable key counts under ("body" for the body's own, a step execution's identity
    # for the undos registered inside it).
    compensations: list[tuple[str, str, Callable[[], Any]]] = field(default_factory=list)
    # Undos registered by step executions that failed: their effects happened, and a
    # retry of the workflow (which clears ``compensations``) must not drop them.
    kept: list[tuple[str, str, Callable[[], Any]]] = field(default_factory=list)
    queries: dict[str, Callable[..., Any]] = field(default_factory=dict)
    last_step: str | None = None
    cancel_requested: bool = False
    terminated: str | None = None
    rollback: str | None = None  # "cancel" / "failure": replay recorded work only
    resumed: bool = False  # a resume of an earlier run of the same execution
    paused: bool = False  # waiting on an approval pause; the watcher notices a resume
    unpaused: bool = False  # set by the watcher: the pause was resumed from outside
    progress_artifact: Any = None  # the run's progress artifact, once reported
    started: float = field(default_factory=time.monotonic)
    attempt: int = 0  # bumped per attempt and before compensating: older bodies are stale
    # Every signal received, per name, and how far this attempt has read: a retry
    # replays the same signals in the same order.
    _signals: dict[str, list[Any]] = field(default_factory=lambda: collections.defaultdict(list))
    _read: collections.Counter[str] = field(default_factory=collections.Counter)
    _labels: collections.Counter[str] = field(default_factory=collections.Counter)
    _occurrences: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    # Approvals: answers addressed to request n, the decision taken for it (recorded,
    # replayed), and how many requests this attempt has made.
    _answers: dict[int | str, list[Any]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )
    decisions: dict[int | str, Any] = field(default_factory=dict)
    _asked: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    # Signals taken by steps: name -> {claim key: index into _signals[name]}.
    claims: dict[str, dict[str, int]] = field(default_factory=lambda: collections.defaultdict(dict))
    # One approval form at a time (a flow run has one pause): parallel steps take turns.
    approving: bool = False

    # ------------------------------------------------------------ durability

    def begin_attempt(self) -> int:
        """A fresh attempt replays from the start: same keys, same signals, same order.
        Returns the attempt's generation (see :data:`ATTEMPT`)."""
        self.compensations.clear()
        self._labels.clear()
        self._occurrences.clear()
        self._read.clear()
        self._asked = 0
        self.last_step = None
        return self.retire()

    def retire(self) -> int:
        """Make the running body stale: its next step boundary raises ``Terminated``."""
        self.attempt += 1
        return self.attempt

    def undo_key(self, identity: str, n: int) -> str:
        """The durable key of the ``n``-th undo registered under ``identity`` (the body,
        or one step execution): a completed undo is found under it and never runs again.
        Counted per identity, so the order in which parallel branches finish does not
        change it (``v2``: keys of the earlier, global count never collide)."""
        raw = f"{self.workflow_id}\x00{self.execution}\x00undo-v2\x00{identity}\x00{n}"
        return "beluga-undo-" + hashlib.sha256(raw.encode()).hexdigest()

    def step_identity(self, name: str, input_hash: str | None) -> tuple[str, str | None]:
        """``(label, durable key)`` of the next call of step ``name`` with this input.

        The n-th call of a step with the same input gets the n-th key, so loops over
        equal inputs stay distinct. Unhashable (unpicklable) input → no key.
        """
        self._labels[name] += 1
        count = self._labels[name]
        label = name if count == 1 else f"{name}-{count}"
        if input_hash is None:
            return label, None
        self._occurrences[(name, input_hash)] += 1
        n = self._occurrences[(name, input_hash)]
        raw = f"{self.workflow_id}\x00{self.execution}\x00{name}\x00{input_hash}\x00{n}"
        return label, "beluga-" + hashlib.sha256(raw.encode()).hexdigest()

    def checkpoint(self) -> None:
        """A step boundary: raise the pending cancel or terminate, if any (and stop a
        body whose attempt was given up, e.g. a sync body past its timeout)."""
        if self.terminated is not None:
            raise Terminated(self.terminated)
        if ATTEMPT.get() not in (None, self.attempt):
            raise Terminated("attempt abandoned")
        if self.cancel_requested and self.rollback is None:  # a roll-back replays on
            raise CancelRequested()

    # ------------------------------------------------------------ from outside

    def deliver(self, name: str, data: Any) -> None:
        """A signal arrived (in order per name)."""
        self._signals[name].append(data)
        self._changed.set()

    def deliver_claim(self, name: str, key: str, index: int) -> None:
        """A step's claim of signal ``name`` number ``index`` (recorded, replayed)."""
        self.claims[name].setdefault(key, index)
        self._changed.set()

    def deliver_answer(self, request: int | str, data: Any) -> None:
        """An answer to approval request ``request`` arrived."""
        self._answers[request].append(data)
        self._changed.set()

    def deliver_decision(self, request: int | str, data: Any) -> None:
        """The recorded decision of approval request ``request`` (the first one wins)."""
        self.decisions.setdefault(request, data)
        self._changed.set()

    def notice_unpause(self) -> None:
        """The approval pause was resumed from outside (the UI's form)."""
        if self.paused:
            self.unpaused = True
            self._changed.set()

    def take_approval_turn(self) -> bool:
        """Open the run's one approval form for the caller, if nobody has it."""
        if self.approving:
            return False
        self.approving = True
        return True

    def end_approval_turn(self) -> None:
        """The form is free again: wake the requests waiting their turn."""
        self.approving = False
        self._changed.set()

    def request_cancel(self) -> None:
        """Ask the body to stop at its next step boundary (or signal wait)."""
        self.cancel_requested = True
        self._changed.set()

    def request_terminate(self, message: str) -> None:
        """Stop now; the state message is ``message``."""
        self.terminated = message
        self._changed.set()

    # ------------------------------------------------------------ from inside

    def _unclaimed(self, name: str) -> list[int]:
        taken = set(self.claims.get(name, {}).values())
        return [i for i in range(len(self._signals.get(name, []))) if i not in taken]

    def take_signal(self, name: str) -> tuple[bool, Any]:
        """``(True, data)`` for the oldest signal ``name`` this attempt has not read
        (and no step claimed), else ``(False, None)``."""
        free = self._unclaimed(name)
        if self._read[name] < len(free):
            self._read[name] += 1
            return True, self._signals[name][free[self._read[name] - 1]]
        return False, None

    def claim_signal(self, name: str, key: str) -> tuple[bool, Any]:
        """``(True, data)`` of the signal claim ``key`` holds — the one it claimed
        before (a replay), else the oldest one nobody took (now claimed, in
        :attr:`claims`) — or ``(False, None)``."""
        claimed = self.claims.get(name, {}).get(key)
        if claimed is not None:  # its signal may not be read in yet: wait for it
            received = self._signals.get(name, [])
            return (True, received[claimed]) if claimed < len(received) else (False, None)
        free = self._unclaimed(name)[self._read[name] :]
        if not free:
            return False, None
        self.claims[name][key] = free[0]
        return True, self._signals[name][free[0]]

    def next_approval(self) -> int:
        """The number of this attempt's next approval request (1, 2, …)."""
        self._asked += 1
        return self._asked

    def take_answer(self, request: int | str) -> tuple[bool, Any]:
        """The oldest answer addressed to ``request`` (later ones are never used)."""
        answers = self._answers.get(request)
        return (True, answers[0]) if answers else (False, None)

    def stop_if_rolling_back(self, what: str) -> None:
        """In a rolling-back replay, work with no record ends the replay."""
        if self.rollback is not None:
            raise RollbackStop(what)

    def mark_seen(self) -> None:
        """Start of a look at the run's inputs: :meth:`changed` then waits only for
        what arrives after it (call it before looking, so nothing is missed)."""
        self._changed.clear()

    async def changed(self, timeout: float | None) -> None:
        """Wait until something arrives from outside after :meth:`mark_seen` (or
        ``timeout`` passes)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def next_signal(self, name: str, timeout: float | None, *, key: str | None = None) -> Any:
        """Wait for signal ``name``; ``TIMEOUT`` after ``timeout`` seconds. With ``key``
        (a step's claim key) it is claimed (:meth:`claim_signal`), not read in order."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            self.mark_seen()
            self.checkpoint()
            found, data = self.take_signal(name) if key is None else self.claim_signal(name, key)
            if found:
                return data
            self.stop_if_rolling_back(f"signal {name!r}")
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise OrchestratorError(
                    "wait_for_signal",
                    f"no {name!r} signal within {timeout:g}s",
                    ErrorCode.TIMEOUT,
                )
            await self.changed(remaining)


@dataclass(eq=False)
class NodeScope:
    """One step execution inside a workflow run (its task run), seen from its code.

    ``label`` is its display name (``review-2``: the order of calls, which parallel
    branches can change); ``identity`` is what its approvals, signal claims and undos
    are keyed by: the step's name and its durable key, the same in every replay.
    """

    run: LiveRun
    label: str
    identity: str
    undos: list[Callable[[], Any]] = field(default_factory=list)
    # Waits started by its code (an approval, a signal): cancelled when the step
    # execution ends, so a wait a sync step abandoned does not go on without it.
    waits: set[asyncio.Task[Any]] = field(default_factory=set)
    _asked: int = 0
    _takes: collections.Counter[str] = field(default_factory=collections.Counter)

    @classmethod
    def of(cls, run: LiveRun, name: str, label: str, key: str | None) -> NodeScope:
        """The scope of the step call ``label`` of step ``name`` under durable ``key``."""
        return cls(run, label, f"{name}@{key[-12:]}" if key is not None else label)

    def begin_attempt(self) -> None:
        """A retry of the step asks the same requests and takes the same signals again
        (its undos so far stay: their effects happened)."""
        self._asked = 0
        self._takes.clear()

    def next_approval(self) -> str:
        """This step's next approval request: ``<identity>/<n>``."""
        self._asked += 1
        return f"{self.identity}/{self._asked}"

    def next_claim(self, name: str) -> str:
        """The claim key of this step's next take of signal ``name``."""
        self._takes[name] += 1
        return f"{self.identity}/{name}/{self._takes[name]}"


@dataclass(frozen=True)
class Recorded:
    """What a step inside a workflow stores under its durable key: its value and the
    compensations its code registered (a replay registers them again)."""

    value: Any
    undos: tuple[Callable[[], Any], ...] = ()


CURRENT: contextvars.ContextVar[LiveRun | None] = contextvars.ContextVar(
    "beluga_workflow_run", default=None
)
# The step execution the caller's code runs in (set inside a workflow's step task run;
# CURRENT is None there so that steps nested in it are plain task runs).
NODE: contextvars.ContextVar[NodeScope | None] = contextvars.ContextVar(
    "beluga_workflow_node", default=None
)
# The attempt a body belongs to (sync bodies carry it into their worker thread).
ATTEMPT: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "beluga_workflow_attempt", default=None
)


def current(op: str) -> LiveRun:
    """The workflow run the caller is in; ``INVALID_STATE`` outside one."""
    run = CURRENT.get()
    if run is None and (scope := NODE.get()) is not None:
        return scope.run
    if run is None:
        raise OrchestratorError(
            op, f"{op}() can only be called inside a workflow run", ErrorCode.INVALID_STATE
        )
    return run
