"""The orchestrator facade (API.md §9): a configuration, objects made from it, their
metrics, health and providers.

``config`` (:class:`OrchestratorConfig`) · ``facade`` (:class:`Orchestrator`,
:func:`new_orchestrator`) · ``registry`` (providers, entry points) · ``admission``
(the thread- and asyncio-safe run gate) · ``managed`` (what ``create_*`` hands out) ·
``health`` (:class:`HealthReport`) · ``monitor`` (the background health monitor).

Example::

    orch = bf.new_orchestrator(max_concurrent_chains=4)
    orch.create_chain([fetch, summarise]).invoke({"input": "x"})
"""

from beluga_flows.orchestrator.config import EnabledFeatures, OrchestratorConfig
from beluga_flows.orchestrator.facade import Orchestrator, new_orchestrator
from beluga_flows.orchestrator.health import ComponentHealth, HealthReport
from beluga_flows.orchestrator.registry import (
    register_chain_provider,
    register_graph_provider,
    register_workflow_provider,
)

__all__ = [
    "ComponentHealth",
    "EnabledFeatures",
    "HealthReport",
    "Orchestrator",
    "OrchestratorConfig",
    "new_orchestrator",
    "register_chain_provider",
    "register_graph_provider",
    "register_workflow_provider",
]
