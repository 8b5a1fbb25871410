"""Plain Python run counters: what :func:`get_metrics` reports without any SDK.

:func:`beluga_flows.telemetry.execution` updates the process counters and, when one
is in force (:func:`use_counters`), an extra :class:`RunCounters` — an
orchestrator passes its own so that ``orch.get_metrics()`` counts only what it
created. A run counts in ``active_*`` while it executes; ``total_executions`` and
``error_count`` count finished runs (a chain that runs as a graph node is a run of
its own, as is the definition inside a durable definition run's workflow).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["RunCounters", "counters_in_force", "get_metrics", "use_counters"]

# The ``active_*`` field a kind of run counts in (a definition run is a workflow run).
_ACTIVE = {
    "chain": "active_chains",
    "graph": "active_graphs",
    "workflow": "active_workflows",
    "definition": "active_workflows",
}


@dataclass
class RunCounters:
    """Runs executing now and finished runs, safe to update from any thread.

    Example::

        mine = RunCounters()
        with use_counters(mine):
            chain.invoke(x)
        mine.snapshot()   # {'active_chains': 0, ..., 'total_executions': 1, 'error_count': 0}
    """

    active_chains: int = 0
    active_graphs: int = 0
    active_workflows: int = 0
    total_executions: int = 0
    error_count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def started(self, kind: str, active: bool = True) -> None:
        """A run of ``kind`` began (``active=False``: it is already counted active,
        as a definition inside a durable workflow run)."""
        attr = _ACTIVE.get(kind)
        if active and attr is not None:
            with self._lock:
                setattr(self, attr, getattr(self, attr) + 1)

    def finished(self, kind: str, ok: bool, active: bool = True) -> None:
        """A run of ``kind`` ended, successfully or not."""
        attr = _ACTIVE.get(kind) if active else None
        with self._lock:
            if attr is not None:
                setattr(self, attr, getattr(self, attr) - 1)
            self.total_executions += 1
            if not ok:
                self.error_count += 1

    def snapshot(self) -> dict[str, int]:
        """The five figures, read together."""
        with self._lock:
            return {
                "active_chains": self.active_chains,
                "active_graphs": self.active_graphs,
                "active_workflows": self.active_workflows,
                "total_executions": self.total_executions,
                "error_count": self.error_count,
            }


PROCESS = RunCounters()
_EXTRA: contextvars.ContextVar[RunCounters | None] = contextvars.ContextVar(
    "beluga_run_counters", default=None
)


@contextlib.contextmanager
def use_counters(counters: RunCounters | None) -> Iterator[None]:
    """Count every run started inside in ``counters`` too (besides the process
    counters); an inner ``use_counters`` replaces an outer one."""
    token = _EXTRA.set(counters)
    try:
        yield
    finally:
        _EXTRA.reset(token)


def counters_in_force() -> tuple[RunCounters, ...]:
    """The process counters and the extra ones in force, if any."""
    extra = _EXTRA.get()
    return (PROCESS,) if extra is None or extra is PROCESS else (PROCESS, extra)


def get_metrics() -> dict[str, int]:
    """The process-wide figures: ``active_chains``, ``active_graphs``,
    ``active_workflows`` (runs executing now), ``total_executions`` and
    ``error_count`` (finished runs). No OpenTelemetry SDK needed.

    Example::

        bf.get_metrics()["error_count"]
    """
    return PROCESS.snapshot()
