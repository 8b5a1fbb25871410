"""The orchestrator: one configuration, and the chains, graphs, workflows and
definitions made from it (API.md §9).

``create_*`` applies the configuration's defaults unless the call overrides them, asks
the provider (:mod:`.registry`) to build the object and hands it back wrapped so that
every run is admitted (at most ``max_concurrent_chains`` chains and
``max_concurrent_workflows`` workflows — definitions included — at once,
``queue_size`` more waiting, then ``RESOURCE_EXHAUSTED``), counted in
:meth:`Orchestrator.get_metrics` and recorded under ``metrics_prefix``
(:mod:`.managed`). On the ``prefect`` provider the same bound holds across processes
through the Prefect global concurrency limits ``beluga-orch-<name>-chains`` and
``beluga-orch-<name>-workflows`` (created with that many slots when missing). Graphs
are counted, not admitted (§9 bounds chains and workflows).

Example::

    orch = bf.new_orchestrator(max_concurrent_chains=4, metrics_prefix="myapp.orchestration")
    summarise = orch.create_chain([fetch, clean, summarise_step], name="summarise")
    summarise.invoke({"input": "https://example.com"})
    orch.get_metrics()      # {'active_chains': 0, ..., 'total_executions': 1, 'error_count': 0}
    orch.check()            # the HealthReport, or RESOURCE_EXHAUSTED naming what is down
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from beluga_flows import _sync, telemetry
from beluga_flows.core.decorators import Flow, flow
from beluga_flows.core.runnable import Runnable
from beluga_flows.definitions.engine import WorkflowEngine
from beluga_flows.definitions.model import WorkflowDefinition
from beluga_flows.durable.workflow import Workflow
from beluga_flows.engine import Engine
from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.orchestrator import registry
from beluga_flows.orchestrator.admission import Admission
from beluga_flows.orchestrator.config import OrchestratorConfig, config_from
from beluga_flows.orchestrator.health import HealthReport, check_health
from beluga_flows.orchestrator.managed import Gate, Managed, ManagedDefinition, admitted
from beluga_flows.orchestrator.monitor import HealthMonitor

__all__ = ["Orchestrator", "new_orchestrator"]


def _disabled(feature: str) -> OrchestratorError:
    return OrchestratorError(
        "orchestrator",
        f"{feature}_disabled: this orchestrator's config has features.{feature}=False",
        ErrorCode.INVALID_STATE,
    )


class Orchestrator:
    """Makes chains, graphs, workflows and definitions with one configuration's
    defaults and limits, counts their runs and checks the health of what they need.

    ``config`` is an :class:`~beluga_flows.OrchestratorConfig`, a mapping of its fields
    or ``None`` (the defaults); keyword ``options`` override single fields.

    Example::

        orch = bf.Orchestrator(bf.OrchestratorConfig(max_workers=8))
        g = orch.create_graph(name="research")        # max_workers=8, graph_timeout …
        wf = orch.create_workflow(order_flow, name="orders")   # a bf.Workflow
    """

    def __init__(
        self, config: OrchestratorConfig | Mapping[str, Any] | None = None, **options: Any
    ) -> None:
        self.config = config_from(config, options)
        self.name = self.config.name
        self.counters = telemetry.RunCounters()
        cfg = self.config
        chains = Admission("chains", cfg.max_concurrent_chains, cfg.queue_size)
        workflows = Admission("workflows", cfg.max_concurrent_workflows, cfg.queue_size)
        limits = {k: f"beluga-orch-{self.name}-{k}s" for k in ("chain", "workflow")}

        def gate(kind: str, admission: Admission | None, limit: str | None) -> Gate:
            return Gate(kind, self.counters, cfg.metrics_prefix, cfg.record_data, admission, limit)

        self.gates: dict[str, Gate] = {
            "chain": gate("chain", chains, limits["chain"]),
            "graph": gate("graph", None, None),
            "workflow": gate("workflow", workflows, limits["workflow"]),
            "definition": gate("definition", workflows, limits["workflow"]),
        }
        self._monitor: HealthMonitor | None = None
        self._monitor_lock = threading.Lock()

    # ---------------------------------------------------------------- creating

    def _check(self, feature: str) -> None:
        if not getattr(self.config.features, feature):
            raise _disabled(feature)

    def create_chain(
        self, steps: Sequence[Any], provider: str | None = None, **chain_options: Any
    ) -> Runnable:
        """A chain of ``steps`` with ``chain_timeout`` / ``chain_retries`` unless given;
        options are :class:`~beluga_flows.Chain`'s. Returns a Runnable whose runs are
        admitted and counted (``.inner`` is the provider's chain).

        Example::

            chain = orch.create_chain([fetch, summarise], name="digest", retries=0)
        """
        self._check("chains")
        cfg = self.config
        options = {"timeout": cfg.chain_timeout, "retries": cfg.chain_retries, **chain_options}
        found = registry.resolve("chain", provider)
        made = _runnable(found, found.factory(steps, **options))
        return Managed(made, self.gates["chain"], found.engine, _timeout(made, options))

    def create_graph(self, provider: str | None = None, **graph_options: Any) -> Runnable:
        """A graph builder with ``graph_timeout``, ``graph_retries``, ``max_workers`` and
        ``parallel`` unless given; options are :class:`~beluga_flows.Graph`'s. Its
        ``add_*`` return it, its ``compile()`` is wrapped too: every run is counted.

        Example::

            g = orch.create_graph(name="research", max_workers=4)
            g.add_node("plan", plan).add_edge(bf.START, "plan")
            g.invoke({"question": "..."})
        """
        self._check("graphs")
        cfg = self.config
        options = {
            "timeout": cfg.graph_timeout,
            "retries": cfg.graph_retries,
            "max_workers": cfg.max_workers,
            "parallel": cfg.parallel,
            **graph_options,
        }
        found = registry.resolve("graph", provider)
        made = _runnable(found, found.factory(**options))
        return Managed(made, self.gates["graph"], found.engine, _timeout(made, options))

    def create_workflow(
        self, fn: Callable[..., Any] | Flow, provider: str | None = None, **workflow_options: Any
    ) -> Workflow:
        """A durable :class:`~beluga_flows.Workflow` of ``fn`` with ``task_queue``,
        ``workflow_timeout`` and ``workflow_retries`` unless given (a ``@bf.flow``'s own
        timeout and retries count as given). Each run is admitted and counted where
        it executes; one refused past the queue fails with ``RESOURCE_EXHAUSTED``.

        Example::

            orders = orch.create_workflow(order_flow, name="orders")
            orders.execute({"order_id": 7}, workflow_id="order-7")
        """
        self._check("workflows")
        cfg = self.config
        options = dict(workflow_options)
        if isinstance(fn, Flow):
            spec = fn.spec
            options.setdefault("name", spec.name)
            if spec.timeout is not None:
                options.setdefault("timeout", spec.timeout)
            if spec.retries:
                options.setdefault("retries", spec.retries)
        options = {
            "task_queue": cfg.task_queue,
            "timeout": cfg.workflow_timeout,
            "retries": cfg.workflow_retries,
            **options,
        }
        found = registry.resolve("workflow", provider)
        timeout = _timeout(None, options)
        gate = self.gates["workflow"]
        body = admitted(fn.fn if isinstance(fn, Flow) else fn, gate, found.engine, timeout)
        if isinstance(fn, Flow):  # keep the flow's other options (tags, max_workers)
            spec = fn.spec
            body = flow(name=spec.name, max_workers=spec.max_workers, tags=spec.tags)(body)
        made = found.factory(body, **options)
        if not all(hasattr(made, m) for m in ("execute", "get_result")):
            raise OrchestratorError(
                "provider",
                f"workflow provider {found.name!r} returned {made!r}, not a Workflow",
                ErrorCode.INVALID_CONFIG,
            )
        return made  # type: ignore[no-any-return]

    def create_definition(
        self,
        definition: WorkflowDefinition | Mapping[str, Any] | str | Path,
        actions: Mapping[str, Callable[..., Any]] | None = None,
        provider: str | Engine | None = None,
    ) -> ManagedDefinition:
        """A workflow definition (a ``WorkflowDefinition``, a mapping, or a YAML file
        path) bound to a :class:`~beluga_flows.WorkflowEngine` with ``actions`` and
        ``provider``; validated now (``INVALID_CONFIG`` / ``NOT_FOUND`` …). Returns a
        Runnable: ``invoke(input_data)`` → the ``ExecutionResult``; its ``engine`` is
        the ``WorkflowEngine``. Runs are admitted and counted as workflows.

        Example::

            onboarding = orch.create_definition("workflows/onboarding.yaml", provider="local")
            onboarding.invoke({"customer_id": "c-1"}).status        # 'completed'
        """
        self._check("definitions")
        if isinstance(definition, str | Path):
            definition = WorkflowDefinition.from_yaml(definition)
        engine = WorkflowEngine(actions=actions, provider=provider)
        return ManagedDefinition(engine, definition, self.gates["definition"])

    # ---------------------------------------------------------------- observing

    def get_metrics(self) -> dict[str, int]:
        """What this orchestrator's objects are doing: ``active_chains``,
        ``active_graphs``, ``active_workflows`` (runs executing now; definitions count
        as workflows), ``total_executions`` and ``error_count`` (finished runs).

        Example::

            orch.get_metrics()["active_chains"]
        """
        return self.counters.snapshot()

    async def ahealth(self, timeout: float = 5.0) -> HealthReport:
        """:meth:`health`, awaitable."""
        return await check_health(self.config.breaker_store, timeout)

    def health(self, timeout: float = 5.0) -> HealthReport:
        """Check the Prefect API, the breaker store, the breakers and each provider
        that offers a check (each bounded by ``timeout`` seconds).

        Example::

            report = orch.health()
            report.healthy, report.components["prefect_api"].status
        """
        return _sync.run_sync(lambda: self.ahealth(timeout))

    async def acheck(self, timeout: float = 5.0) -> HealthReport:
        """:meth:`check`, awaitable."""
        return (await self.ahealth(timeout)).raise_if_unhealthy()

    def check(self, timeout: float = 5.0) -> HealthReport:
        """The health report when healthy, else ``RESOURCE_EXHAUSTED`` naming the
        components that are down (also in the error's ``components``).

        Example::

            orch.check()
        """
        return self.health(timeout).raise_if_unhealthy()

    def start_health_monitor(self, interval: float | None = None) -> HealthMonitor:
        """Check health every ``interval`` seconds (default ``health_check_interval``)
        in a background thread: logs, counts ``<prefix>.health.checks`` /
        ``.health.failures`` and emits a Prefect event on each change. A running
        monitor is returned as it is.

        Example::

            orch.start_health_monitor()
        """
        every = self.config.health_check_interval if interval is None else interval
        if isinstance(every, bool) or not isinstance(every, int | float) or not every > 0:
            raise OrchestratorError(
                "health",
                f"interval must be > 0 seconds, got {interval!r}",
                ErrorCode.INVALID_CONFIG,
            )
        with self._monitor_lock:
            if self._monitor is None or not self._monitor.running:
                self._monitor = HealthMonitor(
                    self.name, self.ahealth, float(every), self.config.metrics_prefix
                ).start()
            return self._monitor

    def stop_health_monitor(self) -> None:
        """Stop the health monitor, if one runs (idempotent)."""
        with self._monitor_lock:
            monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.stop()

    def __repr__(self) -> str:
        return f"<Orchestrator {self.name!r}>"


def new_orchestrator(**options: Any) -> Orchestrator:
    """An :class:`Orchestrator` from flat options: every
    :class:`~beluga_flows.OrchestratorConfig` field by name (an unknown one →
    ``INVALID_CONFIG`` naming it).

    Example::

        orch = bf.new_orchestrator(max_concurrent_chains=4, chain_timeout=60)
    """
    return Orchestrator(OrchestratorConfig(**options))


def _runnable(found: registry.Provider, made: Any) -> Runnable:
    if not isinstance(made, Runnable):
        raise OrchestratorError(
            "provider",
            f"{found.kind} provider {found.name!r} returned {made!r}, not a bf.Runnable",
            ErrorCode.INVALID_CONFIG,
        )
    return made


def _timeout(made: Any, options: Mapping[str, Any]) -> float | None:
    """How long a run may wait for a cross-process slot: the object's own timeout."""
    value = getattr(made, "timeout", None)
    if value is None:
        value = options.get("timeout")
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
