"""The health monitor: an orchestrator's health re-checked on a timer, in a daemon
thread with its own event loop (so it runs the same under sync and async apps, and a
busy app loop does not delay it).

Each check counts ``<prefix>.health.checks`` (and ``<prefix>.health.failures`` when
unhealthy; OpenTelemetry API counters, attribute ``orchestrator.name``), logs one
record on the ``beluga_flows`` logger (INFO when healthy, WARNING when not) and, when
the status of any component changed since the previous check (the first check
included), emits the Prefect event ``beluga.orchestrator.health-changed`` through the
engine seam (payload: ``healthy``, ``components``, ``changed``).

Example::

    monitor = orch.start_health_monitor()      # every health_check_interval seconds
    ...
    orch.stop_health_monitor()
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from beluga_flows import telemetry
from beluga_flows.engine import get_engine
from beluga_flows.orchestrator.health import HealthReport

__all__ = ["HealthMonitor"]

_log = logging.getLogger("beluga_flows")


class HealthMonitor:
    """Checks ``check()`` every ``interval`` seconds until :meth:`stop`.

    ``last`` is the latest report, ``checks`` how many were made;
    :meth:`wait_for_checks` blocks until a number of checks are done (for tests and
    start-up probes).

    Example::

        monitor = orch.start_health_monitor(interval=10)
        monitor.wait_for_checks(1, timeout=30)
        monitor.last.healthy
    """

    def __init__(
        self,
        name: str,
        check: Callable[[], Awaitable[HealthReport]],
        interval: float,
        prefix: str,
    ) -> None:
        self.name = name
        self.interval = interval
        self.prefix = prefix
        self.last: HealthReport | None = None
        self.checks = 0
        self._check = check
        self._stop = threading.Event()
        self._done = threading.Condition()
        self._thread = threading.Thread(
            target=self._main, name=f"beluga-health-{name}", daemon=True
        )

    def start(self) -> HealthMonitor:
        """Start checking (the first check runs at once)."""
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """Whether the monitor thread is alive."""
        return self._thread.is_alive()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop after the check in progress, if any (idempotent)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def wait_for_checks(self, count: int, timeout: float | None = None) -> bool:
        """Block until at least ``count`` checks are done; False on timeout."""
        with self._done:
            return self._done.wait_for(lambda: self.checks >= count, timeout)

    def _main(self) -> None:
        with asyncio.Runner() as runner:
            while not self._stop.is_set():
                try:
                    runner.run(self._once())
                except Exception:  # a broken check must not end the monitor
                    _log.exception("health check of orchestrator %r failed", self.name)
                self._stop.wait(self.interval)

    async def _once(self) -> None:
        report = await self._check()
        previous, self.last = self.last, report
        attrs = {"orchestrator.name": self.name}
        with telemetry.use_prefix(self.prefix):
            telemetry.counter("health.checks", "orchestrator health checks").add(1, attrs)
            if not report.healthy:
                telemetry.counter("health.failures", "failed health checks").add(1, attrs)
        states = {n: c.status for n, c in report.components.items()}
        level = logging.INFO if report.healthy else logging.WARNING
        _log.log(
            level,
            "orchestrator %r health: %s%s",
            self.name,
            "healthy" if report.healthy else "unhealthy",
            "" if report.healthy else f" (down: {', '.join(report.failed)})",
            extra={"operation": "orchestrator.health", "healthy": report.healthy, **attrs},
        )
        before = None if previous is None else {n: c.status for n, c in previous.components.items()}
        if before != states:
            changed = sorted(n for n in states if before is None or before.get(n) != states[n])
            await _emit(self.name, report, changed)
        with self._done:
            self.checks += 1
            self._done.notify_all()


async def _emit(name: str, report: HealthReport, changed: list[str]) -> None:
    """The Prefect event of a status change; a missing API must not break the monitor."""
    try:
        engine: Any = get_engine("prefect")
        emit = getattr(engine, "emit_event", None)
        if emit is None:
            return
        await emit(
            "beluga.orchestrator.health-changed",
            {
                "prefect.resource.id": f"beluga.orchestrator.{name}",
                "prefect.resource.name": name,
            },
            {
                "healthy": report.healthy,
                "components": {n: c.status for n, c in report.components.items()},
                "changed": changed,
            },
        )
    except Exception as err:
        _log.debug("could not emit the health event of %r: %s", name, err)
