"""Health: is the Prefect API up, the breaker store reachable, any breaker open, each
provider fine? One :class:`HealthReport`, and a monitor that re-checks on a timer.

Components (each a :class:`ComponentHealth`, checked concurrently, each bounded by
``timeout`` seconds):

* ``prefect_api`` — ``GET <PREFECT_API_URL>/health`` with its latency; ``down`` when
  it does not answer; ``degraded`` when no API is configured (runs then use a
  temporary local server) or it answers with a 4xx.
* ``breaker_store`` — a ``RedisStore`` is PINGed (``down`` when unreachable); the
  in-memory store is ``ok``.
* ``breakers`` — ``degraded`` naming every open breaker of the process.
* each loaded provider that offers a check (see :mod:`.registry`), by provider name.

The report is healthy when no component is ``down``: a degraded one (an open
breaker) is reported, and logged by the monitor, but keeps a liveness probe green.

Example::

    report = orch.health()
    report.healthy, report.components["prefect_api"].latency_ms
    orch.check()            # RESOURCE_EXHAUSTED naming the components that are down
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import httpx

from beluga_flows.core import middleware
from beluga_flows.engine import get_engine
from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.orchestrator import registry
from beluga_flows.resilience.breaker import CircuitState, all_breakers
from beluga_flows.resilience.stores import BreakerStore

__all__ = ["ComponentHealth", "HealthReport", "check_health"]

Status = Literal["ok", "degraded", "down"]
STATUSES: tuple[Status, ...] = ("ok", "degraded", "down")


@dataclass(frozen=True)
class ComponentHealth:
    """One component's health: ``status`` (``"ok"``, ``"degraded"`` or ``"down"``), a
    human ``detail`` and the check's ``latency_ms`` (``None`` when nothing answered).

    Example::

        ComponentHealth("down", "http://127.0.0.1:4200/api unreachable: ConnectError")
    """

    status: Status
    detail: str = ""
    latency_ms: float | None = None


@dataclass(frozen=True)
class HealthReport:
    """The health of an orchestrator's dependencies: ``healthy`` is True when no
    component is ``down``; ``components`` maps each name to its :class:`ComponentHealth`.

    Example::

        report = orch.health()
        print(report.to_json())
        report.failed        # ['prefect_api'] when the API is down
    """

    healthy: bool
    components: Mapping[str, ComponentHealth] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        """The names of the components that are down."""
        return sorted(n for n, c in self.components.items() if c.status == "down")

    @property
    def degraded(self) -> list[str]:
        """The names of the components that are degraded."""
        return sorted(n for n, c in self.components.items() if c.status == "degraded")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (what ``beluga-flows health --json`` prints)."""
        return {
            "healthy": self.healthy,
            "components": {n: asdict(c) for n, c in sorted(self.components.items())},
        }

    def raise_if_unhealthy(self) -> HealthReport:
        """This report, or ``RESOURCE_EXHAUSTED`` naming the components that are down."""
        if self.healthy:
            return self
        named = "; ".join(f"{n}: {self.components[n].detail}" for n in self.failed)
        raise OrchestratorError(
            "health", f"unhealthy: {named}", ErrorCode.RESOURCE_EXHAUSTED, components=self.failed
        )


async def _timed(
    check: Callable[[], Awaitable[ComponentHealth]], timeout: float
) -> ComponentHealth:
    start = time.perf_counter()
    try:
        found = await asyncio.wait_for(check(), timeout)
    except TimeoutError:
        return ComponentHealth("down", f"no answer within {timeout:g}s")
    except Exception as err:
        return ComponentHealth("down", f"{type(err).__name__}: {err}")
    if found.latency_ms is None and found.status == "ok":
        latency = round((time.perf_counter() - start) * 1000, 3)
        return ComponentHealth(found.status, found.detail, latency)
    return found


async def _prefect_api(engine: Any, timeout: float) -> ComponentHealth:
    url = engine.api_url()
    if not url:
        return ComponentHealth(
            "degraded", "PREFECT_API_URL is not set: runs start a temporary local server"
        )
    start = time.perf_counter()
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            answer = await client.get(f"{url.rstrip('/')}/health", headers=engine.api_headers())
    except httpx.HTTPError as err:
        return ComponentHealth("down", f"{url} unreachable: {type(err).__name__}: {err}")
    latency = round((time.perf_counter() - start) * 1000, 3)
    code = answer.status_code
    if code < 300:
        return ComponentHealth("ok", url, latency)
    return ComponentHealth("down" if code >= 500 else "degraded", f"{url}: HTTP {code}", latency)


async def _breaker_store(store: BreakerStore | None) -> ComponentHealth:
    ping = getattr(store, "ping", None)
    if store is None or ping is None:
        return ComponentHealth("ok", "in-memory" if store is None else type(store).__name__)
    try:
        await ping()
    except OrchestratorError as err:
        return ComponentHealth("down", err.message)
    return ComponentHealth("ok", getattr(store, "url", type(store).__name__))


async def _breakers(timeout: float) -> ComponentHealth:
    breakers = all_breakers()

    async def state(b: Any) -> CircuitState:
        return await asyncio.wait_for(b.astate(), timeout)  # type: ignore[no-any-return]

    states = await asyncio.gather(*(state(b) for b in breakers), return_exceptions=True)
    opened = [b.name for b, s in zip(breakers, states, strict=True) if s == CircuitState.OPEN]
    unknown = [b.name for b, s in zip(breakers, states, strict=True) if isinstance(s, Exception)]
    if opened or unknown:
        parts = [f"open: {', '.join(opened)}"] if opened else []
        parts += [f"state unknown: {', '.join(unknown)}"] if unknown else []
        return ComponentHealth("degraded", "; ".join(parts))
    return ComponentHealth("ok", f"{len(breakers)} breaker(s), none open")


def _as_health(value: Any) -> ComponentHealth:
    """A provider check's answer: a ComponentHealth, a bool, a status, (status, detail)."""
    if isinstance(value, ComponentHealth):
        return value
    if isinstance(value, bool) or value is None:
        return ComponentHealth("ok" if value or value is None else "down")
    if isinstance(value, str) and value in STATUSES:
        return ComponentHealth(value)
    if isinstance(value, tuple) and len(value) == 2 and value[0] in STATUSES:
        return ComponentHealth(value[0], str(value[1]))
    return ComponentHealth("degraded", f"check returned {value!r}")


async def _provider(checks: list[Callable[[], Any]]) -> ComponentHealth:
    found = []
    for check in checks:
        # middleware.call awaits what an async check (or a sync one's coroutine) returns
        found.append(_as_health(await middleware.call(check, (), {})))
    return max(found, key=lambda c: STATUSES.index(c.status))


async def check_health(store: BreakerStore | None, timeout: float = 5.0) -> HealthReport:
    """Check every component concurrently (see the module docstring)."""
    engine = get_engine("prefect")  # imported before the clocks start
    checks: dict[str, Callable[[], Awaitable[ComponentHealth]]] = {
        "prefect_api": lambda: _prefect_api(engine, timeout),
        "breaker_store": lambda: _breaker_store(store),
        "breakers": lambda: _breakers(timeout),
    }
    for name, provided in registry.health_checks().items():
        checks.setdefault(name, lambda provided=provided: _provider(provided))  # type: ignore[misc]
    found = await asyncio.gather(*(_timed(c, timeout) for c in checks.values()))
    components = dict(zip(checks, found, strict=True))
    return HealthReport(all(c.status != "down" for c in found), components)
