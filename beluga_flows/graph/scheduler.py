"""The graph scheduler: a deterministic state machine with no I/O, clock or Prefect.

Events go in (``finished``, ``failed``, ``routed``), commands come out
(:class:`StartNode`, :class:`EvaluateRoute`). The driver (``graph/driver.py``) carries
the commands out; tests feed events by hand and read the commands.

Rules:

* a node is **ready** when every plain-edge predecessor has finished since the
  node last started, or when a conditional edge picks it. There is no superstep
  barrier: a fast branch never waits for a slow sibling.
* when nothing runs and nothing is ready, a join still waiting for predecessors
  that can no longer run (a branch not taken) fires with what has arrived.
* each node starts at most ``max_iterations`` times (``WORKFLOW_DEADLOCK``).
* updates merge into the state; keys with a reducer combine, and two executions
  that overlapped in time writing the same key without one → ``INVALID_STATE``.
* a failed node blocks what depends on it (``dependency_failed``); independent
  work goes on — unless the plan is ``fail_fast`` (a workflow definition): then the
  run stops (the driver cancels what runs, nothing new starts). With finish points,
  the run stops starting nodes once each has run.

Every event costs O(degree + update size): a run is linear in its size.

Why an object and not a function ``(run_state, event) -> (run_state, commands)``:
the run state (arrivals, queue, writes, iteration counts) is owned by the scheduler
and advanced only by events, which gives the same determinism and testability;
copying it on every event, as a literal pure reducer would, makes a run quadratic
(a 10,000-node graph is in the tests and the bench).
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from typing import Any

from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.graph.plan import END, NodeStatus, Plan

__all__ = ["EvaluateRoute", "NodeStatus", "Scheduler", "StartNode"]


@dataclass(frozen=True)
class StartNode:
    """Run ``node`` (its ``iteration``-th time) on ``state``."""

    node: str
    iteration: int
    state: dict[str, Any]


@dataclass(frozen=True)
class EvaluateRoute:
    """Call the router of ``node`` on ``state`` and report with ``routed``."""

    node: str
    state: dict[str, Any]


Command = StartNode | EvaluateRoute


class Scheduler:
    """Decides what runs next in one graph invocation."""

    def __init__(self, plan: Plan, state: dict[str, Any]) -> None:
        self.plan = plan
        self.state = dict(state)
        self.runs: dict[str, int] = dict.fromkeys(plan.nodes, 0)
        self.status: dict[str, NodeStatus] = {}
        self.errors: dict[str, BaseException] = {}
        self.fatal: OrchestratorError | None = None
        self._arrived: dict[str, set[str]] = {}
        self._fifo: deque[str] = deque()
        self._heap: list[tuple[int, str]] = []
        self._queued: set[str] = set()
        self._running: dict[str, int] = {}  # node → event seq when it started
        self._rerun: set[str] = set()
        self._routes_pending = 0
        self._seq = 0
        self._writes: dict[str, tuple[int, str]] = {}
        self._blocked: set[str] = set()
        self._finished: set[str] = set()
        self._stopping = False

    # ---------------------------------------------------------------- events

    def start(self) -> list[Command]:
        """The commands that begin the run."""
        for node in self.plan.entry:
            self._trigger(node)
        return self._advance([])

    def finished(self, node: str, updates: dict[str, Any] | None) -> list[Command]:
        """``node`` returned ``updates``."""
        started = self._running.pop(node)
        self._seq += 1
        commands: list[Command] = []
        try:
            self._merge(node, started, updates or {})
        except OrchestratorError as err:
            self._fail_run(err)
            return self._advance(commands)
        self.status[node] = NodeStatus.COMPLETED
        if node in self.plan.finish:
            self._finished.add(node)
            if self._finished >= self.plan.finish:
                self._stopping = True
        for nxt in self.plan.successors[node]:
            arrived = self._arrived.setdefault(nxt, set())
            arrived.add(node)
            if arrived >= self.plan.predecessors[nxt]:
                self._trigger(nxt)
        if node in self.plan.routes and not self._stopping:
            self._routes_pending += 1
            commands.append(EvaluateRoute(node, dict(self.state)))
        if node in self._rerun:
            self._rerun.discard(node)
            self._trigger(node)
        return self._advance(commands)

    def failed(self, node: str, err: BaseException) -> list[Command]:
        """``node`` raised ``err``: block its dependants, keep independent work going."""
        self._running.pop(node)
        self._seq += 1
        self.status[node] = NodeStatus.FAILED
        self.errors.setdefault(node, err)
        if self.plan.fail_fast:
            self._fail_run(_as_orchestrator_error(node, err))
            return []
        for dependant in self.plan.downstream(node):
            if dependant not in self._running and dependant != node:
                self._blocked.add(dependant)
                self.status[dependant] = NodeStatus.DEPENDENCY_FAILED
        return self._advance([])

    def routed(self, node: str, targets: list[str]) -> list[Command]:
        """The router of ``node`` picked ``targets`` (node names or END)."""
        self._routes_pending -= 1
        for target in targets:
            if target != END:
                self._trigger(target)
        return self._advance([])

    def route_failed(self, err: OrchestratorError) -> list[Command]:
        """A router raised or answered nonsense: the run fails with ``err``."""
        self._routes_pending -= 1
        self._fail_run(err)
        return self._advance([])

    def abort(self, err: OrchestratorError) -> None:
        """Stop starting nodes (timeout, cancellation); ``err`` becomes the outcome."""
        self._fail_run(err)

    # ---------------------------------------------------------------- queries

    @property
    def done(self) -> bool:
        """Nothing runs, nothing is ready, no route is being decided."""
        return not self._running and not self._routes_pending and not self._ready_count()

    @property
    def running(self) -> list[str]:
        """The nodes running now."""
        return list(self._running)

    def report(self) -> dict[str, NodeStatus]:
        """Every node's status (``skipped`` for nodes that never ran)."""
        statuses = dict.fromkeys(self.plan.nodes, NodeStatus.SKIPPED)
        statuses.update(self.status)
        for node in self._running:
            statuses[node] = NodeStatus.RUNNING
        return statuses

    # ---------------------------------------------------------------- internals

    def _fail_run(self, err: OrchestratorError) -> None:
        if self.fatal is None:
            self.fatal = err
        self._stopping = True

    def _trigger(self, node: str) -> None:
        if node in self._blocked or node in self._queued:
            return
        if node in self._running:
            self._rerun.add(node)  # one execution of a node at a time
            return
        self._queued.add(node)
        if self.plan.parallel:
            self._fifo.append(node)
        else:
            heapq.heappush(self._heap, (self.plan.order[node], node))

    def _ready_count(self) -> int:
        return 0 if self._stopping else len(self._queued)

    def _pop(self) -> str:
        node = self._fifo.popleft() if self.plan.parallel else heapq.heappop(self._heap)[1]
        self._queued.discard(node)
        return node

    def _capacity(self) -> int:
        return self.plan.max_workers if self.plan.parallel else 1

    def _advance(self, commands: list[Command]) -> list[Command]:
        while True:
            while not self._stopping and self._queued and len(self._running) < self._capacity():
                node = self._pop()
                if node in self._blocked:
                    continue
                if self.runs[node] >= self.plan.max_iterations:
                    self._fail_run(
                        OrchestratorError(
                            "graph",
                            f"node {node!r} would run more than max_iterations="
                            f"{self.plan.max_iterations} times",
                            ErrorCode.WORKFLOW_DEADLOCK,
                            node=node,
                        )
                    )
                    break
                self.runs[node] += 1
                self._arrived.pop(node, None)
                self._running[node] = self._seq
                commands.append(StartNode(node, self.runs[node], dict(self.state)))
            if self._stopping or self._running or self._routes_pending or self._queued:
                return commands
            waiting = [n for n, got in self._arrived.items() if got and n not in self._blocked]
            if not waiting:
                return commands
            for node in sorted(waiting, key=self.plan.order.__getitem__):
                self._trigger(node)  # joins whose missing predecessors can no longer run

    def _merge(self, node: str, started: int, updates: dict[str, Any]) -> None:
        reducers = self.plan.reducers
        for key, value in updates.items():
            reducer = reducers.get(key)
            if reducer is not None:
                try:
                    self.state[key] = (
                        reducer(self.state[key], value) if key in self.state else value
                    )
                except Exception as err:
                    raise OrchestratorError(
                        "graph",
                        f"reducer of {key!r} failed on the update of {node!r}: {err}",
                        ErrorCode.INVALID_STATE,
                        node=node,
                    ) from err
                continue
            last = self._writes.get(key)
            if last is not None and last[0] > started and last[1] != node:
                raise OrchestratorError(
                    "graph",
                    f"nodes {last[1]!r} and {node!r} ran in parallel and both wrote {key!r}; "
                    f"give {key!r} a reducer (Graph(reducers={{{key!r}: …}}))",
                    ErrorCode.INVALID_STATE,
                    nodes=(last[1], node),
                )
            self.state[key] = value
            self._writes[key] = (self._seq, node)


def _as_orchestrator_error(node: str, err: BaseException) -> OrchestratorError:
    if isinstance(err, OrchestratorError):
        return err
    made = OrchestratorError(
        "graph", f"node {node!r} failed: {err}", ErrorCode.EXECUTION_FAILED, node=node
    )
    made.__cause__ = err
    return made
