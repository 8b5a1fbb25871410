"""The graph driver: carries out the scheduler's commands for one invocation.

It owns the asyncio side (one task per running node, routers evaluated inline, the
deadline, the run's retries) and nothing else: what runs next is the scheduler's
decision, and how a node's call is carried out (span, retry, breaker, limits,
timeout) is the middleware stack's (:func:`beluga_flows.core.middleware.run_member`).
It takes a :class:`~beluga_flows.graph.plan.Plan` — which holds every run option —
and never the builder's objects, so it imports nothing from ``builder``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping
from typing import Any

from beluga_flows import _sync
from beluga_flows.core import middleware, streams
from beluga_flows.engine import Engine, use_engine
from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.graph.plan import GraphReport, GraphResult, Plan
from beluga_flows.graph.scheduler import Command, EvaluateRoute, Scheduler, StartNode

__all__ = ["GraphRun", "drive"]

# The name attribute of a node's span by site: a definition's step names its workflow.
_SITE_NAME = {"definition.step": "workflow.name"}


async def drive(plan: Plan, engine: Engine, state: dict[str, Any]) -> GraphResult:
    """Run ``plan`` on ``state`` with ``engine`` in force, retried under the plan's
    retry policy (each attempt starts again from ``state``)."""
    sink = streams.claim()  # the live stream of this graph, when it is streamed
    with use_engine(engine):
        return await middleware.retrying(
            lambda: GraphRun(plan, engine, state, sink).drive(),
            plan.retry_policy,
            sleep=engine.sleep,
            rng=engine.rng,
        )


class GraphRun:
    """One attempt of one invocation: carries out the scheduler's commands."""

    def __init__(
        self, plan: Plan, engine: Engine, state: dict[str, Any], sink: streams.Sink | None = None
    ) -> None:
        self.plan = plan
        self.engine = engine
        self.sink = sink
        self.sched = Scheduler(plan, state)
        self.tasks: dict[asyncio.Future[Any], str] = {}

    async def drive(self) -> GraphResult:
        """Run until nothing runs any more (or the plan's deadline passes)."""
        loop = asyncio.get_running_loop()
        deadline = None if self.plan.timeout is None else loop.time() + self.plan.timeout
        try:
            await self._apply(self.sched.start())
            while self.tasks:
                wait = None if deadline is None else max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait(
                    self.tasks, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    self._timed_out()
                    break
                for task in done:
                    await self._settle(task)
                if self.plan.fail_fast and self.sched.fatal is not None:
                    break  # the finally cancels the nodes still running
        finally:
            await self._cancel_running()
        return self._outcome()

    async def _settle(self, task: asyncio.Future[Any]) -> None:
        node = self.tasks.pop(task)
        err = task.exception()
        if err is not None and not isinstance(err, Exception):
            raise err  # control flow (cancellation) ends the run as it is
        if err is not None:
            await self._apply(self.sched.failed(node, err))
        else:
            commands = self.sched.finished(node, task.result())
            if self.sink is not None and self.sched.fatal is None:
                self.sink.node_finished(node, task.result(), self.sched.state)
            await self._apply(commands)

    def _timed_out(self) -> None:
        self.sched.abort(
            OrchestratorError(
                "graph",
                f"graph {self.plan.name!r} timed out after {self.plan.timeout:g}s "
                f"(running: {', '.join(self.sched.running)})",
                ErrorCode.TIMEOUT,
            )
        )

    async def _cancel_running(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _apply(self, commands: list[Command]) -> None:
        pending = deque(commands)
        while pending:
            cmd = pending.popleft()
            if isinstance(cmd, StartNode):
                self.tasks[asyncio.ensure_future(self._run_node(cmd))] = cmd.node
            elif isinstance(cmd, EvaluateRoute):
                pending.extend(await self._route(cmd))

    async def _run_node(self, cmd: StartNode) -> dict[str, Any] | None:
        middleware.RUN_LABEL.set(f"{cmd.node}-{cmd.iteration}")
        streams.NODE.set(cmd.node)  # what its streamed chunks are reported under
        site = {
            _SITE_NAME.get(self.plan.site, "graph.name"): self.plan.name,
            "step.name": cmd.node,
            "node.iteration": cmd.iteration,
        }
        runner = self.plan.runners[cmd.node]
        updates = await middleware.run_member(
            self.engine, runner, cmd.state, self.plan.site, site, self.plan.hooks
        )
        if getattr(getattr(runner, "spec", None), "streaming", False):
            updates = {cmd.node: updates}  # a streaming step's value is its node's update
        if updates is not None and not isinstance(updates, Mapping):
            raise OrchestratorError(
                "graph",
                f"node {cmd.node!r} returned {type(updates).__name__}; "
                "a node returns a dict of updates or None",
                ErrorCode.INVALID_STATE,
                node=cmd.node,
            )
        return dict(updates) if updates is not None else None

    async def _route(self, cmd: EvaluateRoute) -> list[Command]:
        route = self.plan.routes[cmd.node]
        try:
            choice = await _sync.settled(route.fn(cmd.state))
            targets = [self._resolve(cmd.node, c) for c in _as_list(choice)]
        except OrchestratorError as err:
            return self.sched.route_failed(err)
        except Exception as err:
            failed = OrchestratorError(
                "graph",
                f"router of {cmd.node!r} failed: {err}",
                ErrorCode.EXECUTION_FAILED,
                node=cmd.node,
            )
            failed.__cause__ = err  # judged by its cause: a flaky router is retried
            return self.sched.route_failed(failed)
        return self.sched.routed(cmd.node, targets)

    def _resolve(self, node: str, choice: Any) -> str:
        route = self.plan.routes[node]
        with contextlib.suppress(TypeError):  # unhashable: no key, and no node name
            if route.path_map is not None and choice in route.path_map:
                return route.path_map[choice]
            if choice in route.targets:
                return str(choice)
        expected = sorted(route.path_map) if route.path_map is not None else sorted(route.targets)
        raise OrchestratorError(
            "graph",
            f"router of {node!r} returned unknown key {choice!r}; expected one of {expected}",
            ErrorCode.INVALID_STATE,
            node=node,
        )

    def _outcome(self) -> GraphResult:
        s = self.sched
        report = GraphReport(statuses=s.report(), iterations=dict(s.runs), errors=dict(s.errors))
        if s.fatal is not None:
            s.fatal.report = report  # type: ignore[attr-defined]
            raise s.fatal
        if s.errors:
            node, err = next(iter(s.errors.items()))
            raise OrchestratorError(
                "graph",
                f"node {node!r} failed: {err}",
                ErrorCode.EXECUTION_FAILED,
                node=node,
                report=report,
            ) from err
        result = GraphResult(s.state)
        result.report = report
        return result


def _as_list(choice: Any) -> list[Any]:
    return list(choice) if isinstance(choice, list | tuple | set | frozenset) else [choice]
