"""Small patterns built from the graph: a router and scatter/gather.

Example::

    triage = bf.Router(classify, {"billing": billing_chain, "tech": tech_chain},
                       fallback=human_queue)
    triage.invoke("my card was charged twice")

    best = bf.scatter_gather([search_web, search_wiki, search_docs], aggregate=rank)
    best.invoke("prefect retries")

Both are graphs whose nodes run their members the way a chain or graph runs one
(:func:`beluga_flows.core.middleware.run_member`, on the engine in force): a step or
Runnable as it is, a plain function as an inline step (``track=False``: no task run
of its own, as before, but the whole middleware stack, span and metrics included).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from beluga_flows._validate import config_error
from beluga_flows.core import middleware
from beluga_flows.core.decorators import Step, derive, step
from beluga_flows.core.runnable import Runnable
from beluga_flows.engine import current_engine
from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.graph.builder import END, START, CompiledGraph, Graph

__all__ = ["Router", "scatter_gather"]


async def _call(
    member: Runnable, value: Any, site: str | None = None, attrs: Mapping[str, Any] | None = None
) -> Any:
    """Run ``member`` on ``value`` on the engine in force (in a ``site`` span if given)."""
    return await middleware.run_member(current_engine(), member, value, site, attrs or {})


def _check(
    owner: str, what: str, member: Any, *, name: str | None = None, track: bool = False
) -> Runnable:
    """``member`` as a Runnable: a plain function becomes a step (inline unless
    ``track``) named ``name`` (default: its own name); a step given another ``name``
    is that step renamed, every option kept."""
    if isinstance(member, Step) and name is not None and name != member.name:
        return derive(member, name, owner)
    if isinstance(member, Runnable):
        return member
    if not callable(member):
        raise config_error(owner, f"{what} must be callable or a Runnable, got {member!r}")
    if isinstance(member, type):  # a class is a callable member too (@step refuses one)
        made: Runnable = step(track=track, name=name or member.__name__)(functools.partial(member))
    else:
        made = step(track=track, name=name)(member)
    return made


class _GraphPattern(Runnable):
    """A Runnable whose input is ``state["input"]`` and output ``state["output"]``."""

    graph: CompiledGraph

    async def ainvoke(self, input: Any, **opts: Any) -> Any:
        return (await self.graph.ainvoke({"input": input}, **opts))["output"]


class Router(_GraphPattern):
    """Send the input to one route picked by ``classifier(input)``.

    The route receives the original input. A key with no route goes to
    ``fallback``; without one it raises ``NOT_FOUND`` naming the key.
    """

    def __init__(
        self,
        classifier: Callable[[Any], Any] | Runnable,
        routes: Mapping[str, Any],
        fallback: Any = None,
        *,
        name: str = "router",
    ) -> None:
        classify_member = _check("router", "classifier", classifier)
        if not isinstance(routes, Mapping) or not routes:
            raise config_error("router", f"routes must be a non-empty dict, got {routes!r}")
        members = {
            f"route:{key}": _check("router", f"route {key!r}", route)
            for key, route in routes.items()
        }
        if fallback is not None:
            members["fallback"] = _check("router", "fallback", fallback)
        self.name = name
        self.routes = dict(routes)
        self.fallback = fallback

        async def classify(state: dict[str, Any]) -> dict[str, Any]:
            return {"route": await _call(classify_member, state["input"])}

        def pick(state: dict[str, Any]) -> str:
            key = state["route"]
            if key in self.routes:
                return f"route:{key}"
            if fallback is not None:
                return "fallback"
            known = ", ".join(map(repr, self.routes))
            raise OrchestratorError(
                "router",
                f"no route for {key!r} (routes: {known}) and no fallback",
                ErrorCode.NOT_FOUND,
            )

        g = Graph(name=name).add_node("classify", classify).set_entry_point("classify")
        for node, member in members.items():
            g.add_node(node, _output_of(member))
        g.add_conditional_edges("classify", pick, list(members))
        self.graph = g.compile()


def _output_of(member: Runnable) -> Callable[[dict[str, Any]], Any]:
    async def run(state: dict[str, Any]) -> dict[str, Any]:
        return {"output": await _call(member, state["input"])}

    return run


class _ScatterGather(_GraphPattern):
    def __init__(self, workers: Sequence[Any], aggregate: Any, name: str) -> None:
        self.name = name
        self.workers = list(workers)
        members = [_check("scatter_gather", f"worker {i}", w) for i, w in enumerate(workers)]
        gather_member = _check("scatter_gather", "aggregate", aggregate)
        g = Graph(name=name, reducers={"results": operator.add}, max_workers=max(1, len(workers)))
        for i, worker in enumerate(members):

            async def scatter(state: dict[str, Any], i: int = i, worker: Runnable = worker) -> Any:
                return {"results": [(i, await _call(worker, state["input"]))]}

            g.add_node(f"worker_{i}", scatter).add_edge(START, f"worker_{i}")
            g.add_edge(f"worker_{i}", "gather")

        async def gather(state: dict[str, Any]) -> dict[str, Any]:
            ordered = [out for _, out in sorted(state["results"], key=operator.itemgetter(0))]
            return {"output": await _call(gather_member, ordered)}

        g.add_node("gather", gather).add_edge("gather", END)
        self.graph = g.compile()

    async def ainvoke(self, input: Any, **opts: Any) -> Any:
        try:
            return await super().ainvoke(input, **opts)
        except OrchestratorError as err:
            report = getattr(err, "report", None)
            failed = sorted(
                int(n.split("_")[1])
                for n in (report.errors if report else {})
                if n.startswith("worker_")
            )
            if not failed:
                raise
            cause = report.errors[f"worker_{failed[0]}"]  # type: ignore[union-attr]
            raise OrchestratorError(
                "scatter_gather",
                f"worker {failed[0]} failed: {cause}",
                ErrorCode.EXECUTION_FAILED,
                worker=failed[0],
                report=report,
            ) from cause


def scatter_gather(
    workers: Sequence[Any], aggregate: Any, *, name: str = "scatter_gather"
) -> Runnable:
    """Run every worker on the same input in parallel, then ``aggregate(results)``.

    Results are in worker order; if workers fail, the error names the first failed
    worker by index, with its exception as ``__cause__``.
    """
    if isinstance(workers, str | bytes) or not isinstance(workers, Sequence) or not workers:
        raise config_error("scatter_gather", f"workers must be a non-empty list, got {workers!r}")
    for i, worker in enumerate(workers):
        _check("scatter_gather", f"worker {i}", worker)
    _check("scatter_gather", "aggregate", aggregate)
    return _ScatterGather(workers, aggregate, name)
