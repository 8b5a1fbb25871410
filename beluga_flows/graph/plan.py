"""The frozen plan a :class:`~beluga_flows.Graph` compiles to, its validation, and
what a run of it reports.

Compiling never mutates the builder: it reads the builder's records, checks them,
and produces a :class:`Plan` whose errors name the culprit node or edge. The plan
holds every run option too (timeout, retry policy, task runner, provider), so the
driver needs nothing but a plan; and the result and report types live here, with
the plan, so the driver and the builder both take them from below.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from beluga_flows._validate import config_error
from beluga_flows.core.hooks import Hooks
from beluga_flows.core.runnable import Runnable
from beluga_flows.engine import Engine
from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.resilience.retry import RetryPolicy

__all__ = [
    "END",
    "START",
    "GraphReport",
    "GraphResult",
    "NodeStatus",
    "Plan",
    "RouteSpec",
    "compile_plan",
]

START = "__start__"
END = "__end__"


class NodeStatus(enum.StrEnum):
    """How a node ended in a graph run."""

    COMPLETED = "completed"
    FAILED = "failed"
    DEPENDENCY_FAILED = "dependency_failed"
    SKIPPED = "skipped"
    RUNNING = "running"


@dataclass(frozen=True)
class GraphReport:
    """How each node of one graph run ended, and how often it ran."""

    statuses: Mapping[str, NodeStatus]
    iterations: Mapping[str, int]
    errors: Mapping[str, BaseException]


class GraphResult(dict[str, Any]):
    """The final state of a graph run (a plain ``dict``) with its ``.report``."""

    report: GraphReport


@dataclass(frozen=True)
class RouteSpec:
    """A conditional edge: ``fn(state)`` picks among ``targets`` (path-map values)."""

    source: str
    fn: Callable[..., Any]
    path_map: Mapping[Any, str] | None  # None: the router returns node names itself
    targets: frozenset[str]  # every node it may pick (all nodes when no path map)


@dataclass(frozen=True)
class Plan:
    """Validated, immutable graph: nodes, edges, routes and run policies."""

    name: str
    nodes: tuple[str, ...]
    runners: Mapping[str, Runnable]
    successors: Mapping[str, tuple[str, ...]]  # plain edges, END excluded
    predecessors: Mapping[str, frozenset[str]]  # plain-edge predecessors
    routes: Mapping[str, RouteSpec]
    entry: tuple[str, ...]
    finish: frozenset[str]
    order: Mapping[str, int]  # deterministic topological index of the plain-edge DAG
    max_workers: int
    parallel: bool
    max_iterations: int
    reducers: Mapping[str, Callable[[Any, Any], Any]] = field(default_factory=dict)
    # run options: the whole run's deadline, its retries, where steps go, which engine
    timeout: float | None = None
    retry_policy: RetryPolicy | None = None
    task_runner: Any = field(default=None, compare=False)
    provider: str | Engine | None = None
    # A failed node stops the run (running nodes cancelled, nothing new starts) instead
    # of blocking only its dependants: a workflow definition's semantics.
    fail_fast: bool = False
    # The span around each node execution (a definition's steps: "definition.step").
    site: str = "graph.node"
    # Callbacks around each node execution (Graph(hooks=...)).
    hooks: Hooks | None = field(default=None, compare=False)
    # Attach the mermaid drawing to each Prefect flow run as an artifact (opt-in).
    artifact: bool = False

    def downstream(self, node: str) -> set[str]:
        """Every node reachable from ``node`` through plain and conditional edges."""
        seen: set[str] = set()
        stack = [node]
        while stack:
            for nxt in self._next(stack.pop()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    def _next(self, node: str) -> Sequence[str]:
        route = self.routes.get(node)
        extra = tuple(route.targets) if route is not None else ()
        return self.successors.get(node, ()) + extra


def _missing(kind: str, name: str, nodes: Mapping[str, Any]) -> OrchestratorError:
    known = ", ".join(sorted(nodes)) or "none"
    return OrchestratorError(
        "graph", f"{kind} names unknown node {name!r} (nodes: {known})", ErrorCode.NOT_FOUND
    )


def _route_spec(
    source: str, fn: Callable[..., Any], path_map: Any, nodes: Mapping[str, Any]
) -> RouteSpec:
    if path_map is None:
        mapping = None
        targets = frozenset(nodes) | {END}
    else:
        if not isinstance(path_map, Mapping | list | tuple | set | frozenset):
            raise config_error("graph", f"path map of {source!r} must be a dict or a list")
        named = list(path_map.values()) if isinstance(path_map, Mapping) else list(path_map)
        if not all(isinstance(target, str) for target in named):
            raise config_error("graph", f"path map of {source!r} must name nodes, got {path_map!r}")
        mapping = dict(path_map) if isinstance(path_map, Mapping) else {v: v for v in named}
        for target in mapping.values():
            if target != END and target not in nodes:
                raise _missing(f"conditional edge from {source!r}", target, nodes)
        targets = frozenset(mapping.values())
    return RouteSpec(source, fn, MappingProxyType(mapping) if mapping else None, targets)


def _topological(nodes: Sequence[str], successors: Mapping[str, tuple[str, ...]]) -> dict[str, int]:
    """Kahn's algorithm, ties broken by insertion order; a leftover node is on a cycle."""
    position = {n: i for i, n in enumerate(nodes)}
    indegree = dict.fromkeys(nodes, 0)
    for n in nodes:
        for s in successors.get(n, ()):
            indegree[s] += 1
    heap = [(position[n], n) for n in nodes if indegree[n] == 0]
    heapq.heapify(heap)
    order: dict[str, int] = {}
    while heap:
        _, n = heapq.heappop(heap)
        order[n] = len(order)
        for s in successors.get(n, ()):
            indegree[s] -= 1
            if indegree[s] == 0:
                heapq.heappush(heap, (position[s], s))
    if len(order) != len(nodes):
        on_cycle = next(n for n in nodes if n not in order)
        raise config_error(
            "graph",
            f"plain edges form a cycle through {on_cycle!r}; loops need a conditional edge",
        )
    return order


def compile_plan(
    *,
    name: str,
    nodes: Mapping[str, Runnable],
    edges: Sequence[tuple[str, str]],
    routes: Sequence[tuple[str, Callable[..., Any], Any]],
    entry: Sequence[str],
    finish: Sequence[str],
    max_workers: int,
    parallel: bool,
    max_iterations: int,
    reducers: Mapping[str, Callable[[Any, Any], Any]],
    timeout: float | None = None,
    retries: int = 0,
    task_runner: Any = None,
    provider: str | Engine | None = None,
    fail_fast: bool = False,
    site: str = "graph.node",
    hooks: Hooks | None = None,
    artifact: bool = False,
) -> Plan:
    """Validate the builder's records (and its already checked run options) into a
    :class:`Plan`."""
    successors: dict[str, list[str]] = {n: [] for n in nodes}
    predecessors: dict[str, set[str]] = {n: set() for n in nodes}
    entries = list(entry)
    for src, dst in edges:
        if src != START and src not in nodes:
            raise _missing("edge", src, nodes)
        if dst != END and dst not in nodes:
            raise _missing("edge", dst, nodes)
        if src == START:
            if dst != END and dst not in entries:
                entries.append(dst)
        elif dst != END and dst not in successors[src]:
            successors[src].append(dst)
            predecessors[dst].add(src)
    route_specs: dict[str, RouteSpec] = {}
    for src, fn, path_map in routes:
        if src not in nodes:
            raise _missing("conditional edge", src, nodes)
        if src in route_specs:
            raise config_error("graph", f"node {src!r} already has conditional edges")
        route_specs[src] = _route_spec(src, fn, path_map, nodes)
    for n in entries:
        if n not in nodes:
            raise _missing("entry point", n, nodes)
    for n in finish:
        if n not in nodes:
            raise _missing("finish point", n, nodes)
    if not entries:
        raise config_error("graph", "no entry point: call set_entry_point() or add_edge(START, …)")
    frozen_succ = {n: tuple(s) for n, s in successors.items()}
    order = _topological(list(nodes), frozen_succ)
    plan = Plan(
        name=name,
        nodes=tuple(nodes),
        runners=MappingProxyType(dict(nodes)),
        successors=MappingProxyType(frozen_succ),
        predecessors=MappingProxyType({n: frozenset(p) for n, p in predecessors.items()}),
        routes=MappingProxyType(route_specs),
        entry=tuple(entries),
        finish=frozenset(finish),
        order=MappingProxyType(order),
        max_workers=max_workers,
        parallel=parallel,
        max_iterations=max_iterations,
        reducers=MappingProxyType(dict(reducers)),
        timeout=timeout,
        retry_policy=RetryPolicy.from_retries(retries) if retries else None,
        task_runner=task_runner,
        provider=provider,
        fail_fast=fail_fast,
        site=site,
        hooks=hooks,
        artifact=artifact,
    )
    reachable = set(plan.entry)
    for n in plan.entry:
        reachable |= plan.downstream(n)
    unreachable = [n for n in plan.nodes if n not in reachable]
    if unreachable:
        raise config_error("graph", f"node {unreachable[0]!r} is unreachable from the entry point")
    return plan
