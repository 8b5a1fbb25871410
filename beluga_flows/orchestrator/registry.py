"""Providers: who builds the chains, graphs and workflows an orchestrator creates.

A provider is a factory registered under a name for one kind of object:

* chain: ``factory(steps, **chain_options)`` → a :class:`~beluga_flows.Runnable`;
* graph: ``factory(**graph_options)`` → a Runnable (a builder with ``add_node`` …);
* workflow: ``factory(fn, **workflow_options)`` → a :class:`~beluga_flows.Workflow`.

Built in: ``prefect`` (the default; steps as task runs) and ``local`` (in-process,
no Prefect API) for chains and graphs, ``prefect`` for workflows (a durable workflow
needs the Prefect API). Third-party packages register through the entry-point group
``beluga_flows.providers``: an entry point named ``chain.NAME``, ``graph.NAME`` or
``workflow.NAME`` pointing at the factory, loaded the first time the name is used.
A factory may offer a health check (``factory.health_check``, or ``health=`` when
registering): a callable, sync or async, returning a bool, a status string or a
``(status, detail)`` pair, that :meth:`~beluga_flows.Orchestrator.health` reports.

Example::

    bf.register_chain_provider("traced", lambda steps, **o: bf.Chain(steps, **o))
    orch.create_chain([fetch, summarise], provider="traced")

    # pyproject.toml of a provider package
    [project.entry-points."beluga_flows.providers"]
    "chain.tiny" = "tiny_provider:make_chain"
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from beluga_flows.durable.workflow import Workflow
from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.graph.builder import Graph
from beluga_flows.graph.chain import Chain

__all__ = [
    "ENTRY_POINT_GROUP",
    "Provider",
    "default_provider",
    "health_checks",
    "known_providers",
    "register_chain_provider",
    "register_graph_provider",
    "register_provider",
    "register_workflow_provider",
    "resolve",
]

Kind = Literal["chain", "graph", "workflow"]
KINDS: tuple[Kind, ...] = ("chain", "graph", "workflow")
ENTRY_POINT_GROUP = "beluga_flows.providers"
_log = logging.getLogger("beluga_flows")


@dataclass(frozen=True)
class Provider:
    """A registered factory: its kind, name, engine (``"prefect"``, ``"local"`` or
    ``None`` when it is not one of beluga's engines) and optional health check."""

    kind: str
    name: str
    factory: Callable[..., Any]
    engine: str | None = None
    health: Callable[[], Any] | None = None


_LOCK = threading.Lock()
_PROVIDERS: dict[tuple[str, str], Provider] = {}
# Entry points found but not loaded yet; None until the group has been read.
_ENTRY_POINTS: dict[tuple[str, str], importlib.metadata.EntryPoint] | None = None


def _entry_points() -> dict[tuple[str, str], importlib.metadata.EntryPoint]:
    """``{(kind, name): entry point}`` of the installed packages (read once)."""
    global _ENTRY_POINTS
    if _ENTRY_POINTS is None:
        found: dict[tuple[str, str], importlib.metadata.EntryPoint] = {}
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            kind, dot, name = ep.name.partition(".")
            if not dot or kind not in KINDS or not name:
                _log.warning("ignoring entry point %r of %s: not KIND.NAME", ep.name, ep.value)
                continue
            found[(kind, name)] = ep
        _ENTRY_POINTS = found
    return _ENTRY_POINTS


def reload_entry_points() -> None:
    """Read the entry-point group again (after installing a provider package)."""
    global _ENTRY_POINTS
    importlib.invalidate_caches()
    _ENTRY_POINTS = None


def register_provider(
    kind: str,
    name: str,
    factory: Callable[..., Any],
    *,
    health: Callable[[], Any] | None = None,
    engine: str | None = None,
) -> Provider:
    """Register ``factory`` as the ``kind`` provider ``name``; a taken name (registered,
    or installed as an entry point) → ``INVALID_CONFIG``."""
    if kind not in KINDS:
        raise OrchestratorError(
            "provider",
            f"kind must be one of {', '.join(KINDS)}, got {kind!r}",
            ErrorCode.INVALID_CONFIG,
        )
    if not isinstance(name, str) or not name.strip() or "." in name:
        raise OrchestratorError(
            "provider",
            f"{kind} provider name must be a non-empty string without '.', got {name!r}",
            ErrorCode.INVALID_CONFIG,
        )
    if not callable(factory):
        raise OrchestratorError(
            "provider",
            f"{kind} provider {name!r}: factory must be callable",
            ErrorCode.INVALID_CONFIG,
        )
    check = health if health is not None else getattr(factory, "health_check", None)
    if check is not None and not callable(check):
        raise OrchestratorError(
            "provider",
            f"{kind} provider {name!r}: health must be callable",
            ErrorCode.INVALID_CONFIG,
        )
    with _LOCK:
        taken = (kind, name) in _PROVIDERS
        entry = _entry_points().get((kind, name))
        if taken or entry is not None:
            where = "registered" if taken else f"provided by the entry point {entry.value!r}"  # type: ignore[union-attr]
            raise OrchestratorError(
                "provider",
                f"{kind} provider name {name!r} is taken (already {where})",
                ErrorCode.INVALID_CONFIG,
            )
        made = _PROVIDERS[(kind, name)] = Provider(kind, name, factory, engine, check)
    return made


def register_chain_provider(
    name: str, factory: Callable[..., Any], *, health: Callable[[], Any] | None = None
) -> None:
    """Make ``provider=name`` on :meth:`~beluga_flows.Orchestrator.create_chain` call
    ``factory(steps, **chain_options)``, which returns a Runnable.

    Example::

        bf.register_chain_provider("mine", lambda steps, **o: bf.Chain(steps, **o))
    """
    register_provider("chain", name, factory, health=health)


def register_graph_provider(
    name: str, factory: Callable[..., Any], *, health: Callable[[], Any] | None = None
) -> None:
    """Make ``provider=name`` on :meth:`~beluga_flows.Orchestrator.create_graph` call
    ``factory(**graph_options)``, which returns a Runnable graph builder.

    Example::

        bf.register_graph_provider("mine", lambda **o: bf.Graph(**o))
    """
    register_provider("graph", name, factory, health=health)


def register_workflow_provider(
    name: str, factory: Callable[..., Any], *, health: Callable[[], Any] | None = None
) -> None:
    """Make ``provider=name`` on :meth:`~beluga_flows.Orchestrator.create_workflow` call
    ``factory(fn, **workflow_options)``, which returns a :class:`~beluga_flows.Workflow`.

    Example::

        bf.register_workflow_provider("served", lambda fn, **o: bf.Workflow(fn, mode="served", **o))
    """
    register_provider("workflow", name, factory, health=health)


def known_providers(kind: str) -> list[str]:
    """The names ``provider=`` accepts for ``kind``: registered and installed."""
    with _LOCK:
        names = {n for k, n in _PROVIDERS if k == kind}
        names |= {n for k, n in _entry_points() if k == kind}
    return sorted(names)


def default_provider(kind: str) -> str:
    """``$BELUGA_FLOWS_PROVIDER`` when it names a ``kind`` provider, else ``prefect``."""
    wanted = os.environ.get("BELUGA_FLOWS_PROVIDER")
    if wanted and wanted in known_providers(kind):
        return wanted
    return "prefect"


def resolve(kind: str, name: str | None) -> Provider:
    """The provider ``name`` (``None``: :func:`default_provider`), loading its entry
    point on first use; unknown → ``NOT_FOUND`` listing the known names."""
    name = default_provider(kind) if name is None else name
    with _LOCK:
        found = _PROVIDERS.get((kind, name))
        entry = None if found is not None else _entry_points().get((kind, name))
    if found is not None:
        return found
    if entry is None:
        known = ", ".join(known_providers(kind)) or "none"
        raise OrchestratorError(
            "provider", f"unknown {kind} provider {name!r}; known: {known}", ErrorCode.NOT_FOUND
        )
    try:
        factory = entry.load()
    except Exception as err:
        raise OrchestratorError(
            "provider",
            f"{kind} provider {name!r}: entry point {entry.value!r} failed to load: {err}",
            ErrorCode.INVALID_CONFIG,
        ) from err
    with _LOCK:
        found = _PROVIDERS.get((kind, name))
        if found is None:  # another thread may have loaded it first
            check = getattr(factory, "health_check", None)
            found = _PROVIDERS[(kind, name)] = Provider(
                kind, name, factory, health=check if callable(check) else None
            )
        assert _ENTRY_POINTS is not None
        _ENTRY_POINTS.pop((kind, name), None)
    return found


def health_checks() -> dict[str, list[Callable[[], Any]]]:
    """``{provider name: its checks}`` of the loaded providers that offer one."""
    found: dict[str, list[Callable[[], Any]]] = {}
    with _LOCK:
        for (_, name), p in _PROVIDERS.items():
            if p.health is not None and p.health not in found.setdefault(name, []):
                found[name].append(p.health)
    return {k: v for k, v in found.items() if v}


def _builtin(engine: str) -> None:
    def chain(steps: Any, **options: Any) -> Chain:
        return Chain(steps, provider=engine, **options)

    def graph(**options: Any) -> Graph:
        return Graph(provider=engine, **options)

    _PROVIDERS[("chain", engine)] = Provider("chain", engine, chain, engine)
    _PROVIDERS[("graph", engine)] = Provider("graph", engine, graph, engine)


_builtin("prefect")
_builtin("local")
_PROVIDERS[("workflow", "prefect")] = Provider("workflow", "prefect", Workflow, "prefect")
