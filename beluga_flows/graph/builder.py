"""Graph: a state graph with parallel branches, conditional edges and bounded loops.

Example::

    import operator
    import beluga_flows as bf

    g = bf.Graph(name="research", reducers={"notes": operator.add}, max_iterations=3)
    g.add_node("plan", plan)
    g.add_node("search", search)
    g.add_node("review", review)
    g.add_edge(bf.START, "plan")
    g.add_edge("plan", "search")
    g.add_edge("search", "review")
    g.add_conditional_edges("review", lambda s: "again" if s["gaps"] else "done",
                            {"again": "plan", "done": bf.END})
    final_state = g.invoke({"question": "..."})

On Prefect one invocation is one flow run (a sub-flow inside a flow) and each node
execution a task run named ``<node>-<iteration>``; with ``artifact=True`` the mermaid
drawing is attached to each flow run as a markdown artifact (one more API request
and event per run, so opt-in).
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any

from beluga_flows import telemetry
from beluga_flows._validate import config_error, non_negative_int, positive_int, seconds
from beluga_flows.core import streams
from beluga_flows.core.decorators import Step, derive, step
from beluga_flows.core.hooks import Hooks, check_hooks
from beluga_flows.core.runnable import Runnable
from beluga_flows.engine import Engine, get_engine
from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.graph import driver
from beluga_flows.graph.plan import (
    END,
    START,
    GraphReport,
    GraphResult,
    NodeStatus,
    Plan,
    compile_plan,
)
from beluga_flows.resilience.retry import RetryPolicy

__all__ = ["END", "START", "CompiledGraph", "Graph", "GraphReport", "GraphResult", "NodeStatus"]


class Graph(Runnable):
    """The builder: record nodes and edges, then :meth:`compile` (or just invoke).

    Builder mistakes raise ``INVALID_CONFIG`` / ``NOT_FOUND`` naming the culprit,
    from ``add_*`` when they can be seen there, else from :meth:`compile`.
    ``hooks`` (:class:`~beluga_flows.Hooks`, or a list of them) run around each node
    execution; an ``on_error`` replacement is that node's update.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        timeout: Any = None,
        retries: int = 0,
        max_workers: int = 8,
        parallel: bool = True,
        max_iterations: int = 25,
        reducers: Mapping[str, Callable[[Any, Any], Any]] | None = None,
        task_runner: Any = None,
        provider: str | Engine | None = None,
        hooks: Hooks | Sequence[Hooks] | None = None,
        artifact: bool = False,
    ) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise config_error("graph", f"name must be a non-empty string, got {name!r}")
        for flag, value in (("parallel", parallel), ("artifact", artifact)):
            if not isinstance(value, bool):
                raise config_error("graph", f"{flag} must be True or False, got {value!r}")
        if reducers is not None and not isinstance(reducers, Mapping):
            raise config_error("graph", f"reducers must be a dict of callables, got {reducers!r}")
        reducers = dict(reducers or {})
        for key, fn in reducers.items():
            if not isinstance(key, str) or not callable(fn):
                raise config_error("graph", f"reducer for {key!r} must be a callable, got {fn!r}")
        if task_runner is not None and not hasattr(task_runner, "submit"):
            raise config_error(
                "graph", f"task_runner must be a Prefect TaskRunner, got {task_runner!r}"
            )
        self.name = name or "graph"
        self.timeout = seconds("graph", "timeout", timeout)
        self.retries = non_negative_int("graph", "retries", retries, maximum=20)
        self.max_workers = positive_int("graph", "max_workers", max_workers, maximum=1000)
        self.parallel = parallel
        self.max_iterations = positive_int(
            "graph", "max_iterations", max_iterations, maximum=1_000_000
        )
        self.reducers = reducers
        self.task_runner = task_runner
        self.provider = provider
        self.artifact = artifact
        if provider is not None:
            get_engine(provider)
        self.hooks = check_hooks("graph", hooks)
        self._nodes: dict[str, Runnable] = {}
        self._edges: list[tuple[str, str]] = []
        self._routes: list[tuple[str, Callable[..., Any], Any]] = []
        self._entry: list[str] = []
        self._finish: list[str] = []

    # ---------------------------------------------------------------- building

    def add_node(
        self,
        name: str,
        fn: Any,
        *,
        retry_policy: RetryPolicy | None = None,
        timeout: Any = None,
        track: bool | None = None,
    ) -> Graph:
        """Add a node: a callable ``state -> updates``, a step, or any Runnable
        (a chain, another graph). ``retry_policy``/``timeout``/``track`` override a
        step's own options."""
        if not isinstance(name, str) or not name or name in (START, END):
            raise config_error("graph", f"node name must be a non-empty string, got {name!r}")
        if name in self._nodes:
            raise config_error("graph", f"duplicate node {name!r}")
        overrides = {"retry_policy": retry_policy, "timeout": timeout, "track": track}
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if isinstance(fn, Step) or not isinstance(fn, Runnable):
            self._nodes[name] = _node_step(name, fn, overrides)
        elif overrides:
            raise config_error(
                "graph", f"node {name!r}: {sorted(overrides)} apply to functions and steps"
            )
        else:
            self._nodes[name] = fn
        return self

    def add_edge(self, source: str, target: str) -> Graph:
        """``target`` runs after ``source`` (and after every other predecessor)."""
        self._edges.append((_node_name("edge", source), _node_name("edge", target)))
        return self

    def add_conditional_edges(
        self, source: str, route: Callable[..., Any], path_map: Any = None
    ) -> Graph:
        """After ``source``, ``route(state)`` picks what runs next: a key of
        ``path_map``, a node name, ``END``, or a list of them (fan-out)."""
        if not callable(route):
            raise config_error("graph", f"router of {source!r} must be callable, got {route!r}")
        self._routes.append((_node_name("conditional edge", source), route, path_map))
        return self

    def set_entry_point(self, nodes: str | Sequence[str]) -> Graph:
        """The node(s) that start the run (like ``add_edge(START, node)``)."""
        self._entry = _node_names("entry point", nodes)
        return self

    def set_finish_point(self, nodes: str | Sequence[str]) -> Graph:
        """The run ends once each of these nodes has run."""
        self._finish = _node_names("finish point", nodes)
        return self

    def compile(self) -> CompiledGraph:
        """Validate and freeze; the builder is left as it was."""
        plan = compile_plan(
            name=self.name,
            nodes=self._nodes,
            edges=self._edges,
            routes=self._routes,
            entry=self._entry,
            finish=self._finish,
            max_workers=self.max_workers,
            parallel=self.parallel,
            max_iterations=self.max_iterations,
            reducers=self.reducers,
            timeout=self.timeout,
            retries=self.retries,
            task_runner=self.task_runner,
            provider=self.provider,
            hooks=self.hooks,
            artifact=self.artifact,
        )
        return CompiledGraph(plan)

    # ---------------------------------------------------------------- running

    async def ainvoke(self, input: Any, **opts: Any) -> Any:
        """Compile and run (see :meth:`CompiledGraph.ainvoke`)."""
        return await self.compile().ainvoke(input, **opts)

    async def astream(
        self, input: Any, stream_mode: Any = "values", **opts: Any
    ) -> AsyncGenerator[Any, None]:
        """Compile and stream (see :meth:`CompiledGraph.astream`)."""
        async with contextlib.aclosing(self.compile().astream(input, stream_mode, **opts)) as items:
            async for item in items:
                yield item

    def draw_mermaid(self) -> str:
        """The graph as a mermaid flowchart."""
        return self.compile().draw_mermaid()


def _node_name(what: str, value: Any) -> str:
    """A node name as an edge, router or entry names it (known or not: ``compile``
    tells ``NOT_FOUND``); anything but a non-empty string is ``INVALID_CONFIG``."""
    if not isinstance(value, str) or not value:
        raise config_error("graph", f"{what} must name a node (a string), got {value!r}")
    return value


def _node_names(what: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [_node_name(what, value)]
    if not isinstance(value, Sequence):
        raise config_error("graph", f"{what} must be a node name or a list of them, got {value!r}")
    return [_node_name(what, v) for v in value]


def _node_step(name: str, fn: Any, overrides: dict[str, Any]) -> Step:
    """The node's step, named after the node: a step keeps every option of its
    ``@step`` but the overrides; a function becomes a step with the overrides."""
    if isinstance(fn, Step):
        return derive(fn, name, "graph", **overrides)
    if not callable(fn) or isinstance(fn, type):
        raise config_error("graph", f"node {name!r} is not callable: {fn!r}")
    made: Step = step(name=name, **overrides)(fn)
    return made


class CompiledGraph(Runnable):
    """A validated graph, ready to run many times.

    Its ``plan`` holds everything a run needs (run options included); ``name``,
    ``timeout``, ``task_runner`` and ``provider`` are the plan's, for reading.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.name = plan.name
        self.timeout = plan.timeout
        self.task_runner = plan.task_runner
        self.provider = plan.provider

    async def ainvoke(self, input: Any, **opts: Any) -> GraphResult:
        """Run on the initial state ``input`` (a dict) and return the final state."""
        if input is None:
            input = {}
        if not isinstance(input, Mapping):
            raise OrchestratorError(
                "graph",
                f"graph {self.name!r} needs a dict as its state, got {type(input).__name__}",
                ErrorCode.INVALID_INPUT,
            )
        engine = get_engine(opts.get("provider") or self.provider)
        attrs = {"graph.nodes": len(self.plan.nodes)}
        async with telemetry.execution("graph", self.name, attrs=attrs, input=input) as sp:
            result: GraphResult = await engine.in_flow(
                self.name,
                lambda state: self._body(engine, state),
                dict(input),
                task_runner=self.task_runner,
                tags=("beluga:graph",),
            )
            telemetry.record_value(sp, "output", result)
            return result

    async def astream(
        self, input: Any, stream_mode: Any = "values", **opts: Any
    ) -> AsyncGenerator[Any, None]:
        """Run on ``input`` and yield *while it runs* (``stream`` is the sync twin).

        ``stream_mode``: ``"values"`` (the default) → a copy of the whole state after
        each node execution's update is merged; ``"updates"`` → ``(node, update)`` as
        each node execution ends; ``"custom"`` → what nodes and steps pass to
        :func:`~beluga_flows.emit`; ``"messages"`` → ``(node, chunk)`` for every chunk
        a streaming step yields, as it is yielded. A list of modes yields
        ``(mode, payload)`` pairs. A failure is raised after what came before it; a
        consumer that stops early cancels the run. See ``docs/streaming.md``.

        Example::

            async for node, update in graph.astream({"q": "..."}, stream_mode="updates"):
                print(node, update)
        """
        modes, single = streams.stream_modes(stream_mode)
        run = functools.partial(self.ainvoke, input, **opts)
        async with contextlib.aclosing(streams.live(run, modes)) as events:
            async for mode, payload in events:
                yield payload if single else (mode, payload)

    async def _body(self, engine: Engine, state: dict[str, Any]) -> GraphResult:
        if self.plan.artifact:
            await engine.publish_markdown(
                _artifact_key(self.name),
                f"```mermaid\n{self.draw_mermaid()}\n```",
                f"graph {self.name!r}",
            )
        return await driver.drive(self.plan, engine, state)

    def draw_mermaid(self) -> str:
        """The graph as a mermaid flowchart (conditional edges dotted, labelled)."""
        p = self.plan
        lines = ["flowchart TD", f"    {START}([start])", f"    {END}([end])"]
        lines += [f"    {n}[{n}]" for n in p.nodes]
        lines += [f"    {START} --> {n}" for n in p.entry]
        for n in p.nodes:
            lines += [f"    {n} --> {s}" for s in p.successors[n]]
            if not p.successors[n] and n not in p.routes:
                lines.append(f"    {n} --> {END}")
            route = p.routes.get(n)
            if route is not None and route.path_map is not None:
                lines += [f"    {n} -. {k} .-> {t}" for k, t in route.path_map.items()]
            elif route is not None:
                lines += [f"    {n} -.-> {t}" for t in sorted(route.targets)]
        return "\n".join(lines)


def _artifact_key(name: str) -> str:
    return "graph-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "graph")
