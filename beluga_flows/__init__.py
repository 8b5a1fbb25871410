"""beluga_flows: resilient orchestration on Prefect 3.

Decorate plain functions with :func:`step` and :func:`flow`, compose them into a
:class:`Chain`, and watch every run in the Prefect UI.

Example::

    import beluga_flows as bf

    @bf.step(retries=2, timeout=10)
    def fetch(city: str) -> dict: ...

    @bf.flow
    def weather(city: str) -> dict:
        return fetch(city)

Layers, lowest first. A module imports only from its own layer or lower ones; a
module belongs to the layer of its longest matching prefix (``core.specs`` is in
layer 5, ``core.decorators`` in layer 8). ``tests/test_architecture.py`` reads
this list and fails on an import against it, on any import circle, and on a
``prefect`` import outside ``engine.prefect``, ``tools.deploy`` and ``cli``::

    1. errors
    2. _validate, _digest, _threads, _procs, _sync
    3. telemetry
    4. resilience
    5. core.specs, core.hooks, core.streams, engine.base, core.middleware
    6. durable.live
    7. engine, engine.local, engine.prefect
    8. core, core.runnable, core.decorators, core.memory
    9. graph
    10. durable, durable.inside, durable.workflow, durable.client
    11. definitions
    12. orchestrator
    13. tools
    14. cli
    15. beluga_flows, testing

Where the order is not obvious:

* The engines (5, 7) sit *below* the decorators (8): calling a step asks the
  engine in force to run it, so the engines are typed against
  :class:`~beluga_flows.core.specs.StepLike`/``FlowLike`` and the frozen specs,
  never against ``Step``/``Flow``.
* ``Flow.to_prefect()`` asks the engine registry (``get_engine("prefect")``)
  for the adapter instead of importing it: the registry is the one place that
  knows the adapter, and it is below the decorators.
* ``definitions`` (the declarative engine) sits above ``graph`` and ``durable``: a
  definition compiles to a graph plan, and ``start`` runs it as a durable workflow.
* ``Runnable | other`` builds a chain, yet ``core`` is below ``graph``: the chain
  module registers its constructor into ``core.runnable`` when it is imported
  (this package always imports it), so the core never imports the graph.
* ``orchestrator`` (the facade of §9) sits above everything it makes objects
  from (chains, graphs, workflows, definitions) and below the CLI's ``health``.
"""

from beluga_flows.core.decorators import Flow, FlowSpec, Step, StepSpec, flow, step
from beluga_flows.core.hooks import Hooks
from beluga_flows.core.memory import BufferMemory
from beluga_flows.core.runnable import Runnable
from beluga_flows.core.streams import emit
from beluga_flows.definitions.actions import action, register_action
from beluga_flows.definitions.engine import WorkflowEngine
from beluga_flows.definitions.model import WorkflowDefinition
from beluga_flows.definitions.records import ExecutionResult, StepRecord
from beluga_flows.durable.inside import (
    Approval,
    compensate,
    query_handler,
    report_progress,
    request_approval,
    wait_for_signal,
)
from beluga_flows.durable.workflow import (
    StepStatus,
    Workflow,
    WorkflowClient,
    WorkflowHandle,
    serve,
)
from beluga_flows.engine import Engine, LocalEngine, use_engine
from beluga_flows.errors import ErrorCode, OrchestratorError, is_retryable
from beluga_flows.graph.agents import Blackboard, Supervisor
from beluga_flows.graph.builder import (
    END,
    START,
    CompiledGraph,
    Graph,
    GraphReport,
    GraphResult,
    NodeStatus,
)
from beluga_flows.graph.chain import Chain
from beluga_flows.graph.handoff import Handoff, handoff_to
from beluga_flows.graph.hedge import hedge
from beluga_flows.graph.patterns import Router, scatter_gather
from beluga_flows.graph.strategies import delegate_by_skill, load_balanced, round_robin
from beluga_flows.orchestrator import (
    ComponentHealth,
    EnabledFeatures,
    HealthReport,
    Orchestrator,
    OrchestratorConfig,
    new_orchestrator,
    register_chain_provider,
    register_graph_provider,
    register_workflow_provider,
)
from beluga_flows.resilience.breaker import CircuitBreaker, CircuitState
from beluga_flows.resilience.limits import define_rate_limit
from beluga_flows.resilience.providers import ProviderLimits, consume_tokens
from beluga_flows.resilience.retry import RetryPolicy
from beluga_flows.resilience.stores import BreakerStore, MemoryStore, RedisStore
from beluga_flows.telemetry import configure_logging, get_metrics, init_metrics

__version__ = "0.1.0"

__all__ = [
    "END",
    "START",
    "Approval",
    "Blackboard",
    "BreakerStore",
    "BufferMemory",
    "Chain",
    "CircuitBreaker",
    "CircuitState",
    "CompiledGraph",
    "ComponentHealth",
    "EnabledFeatures",
    "Engine",
    "ErrorCode",
    "ExecutionResult",
    "Flow",
    "FlowSpec",
    "Graph",
    "GraphReport",
    "GraphResult",
    "Handoff",
    "HealthReport",
    "Hooks",
    "LocalEngine",
    "MemoryStore",
    "NodeStatus",
    "Orchestrator",
    "OrchestratorConfig",
    "OrchestratorError",
    "ProviderLimits",
    "RedisStore",
    "RetryPolicy",
    "Router",
    "Runnable",
    "Step",
    "StepRecord",
    "StepSpec",
    "StepStatus",
    "Supervisor",
    "Workflow",
    "WorkflowClient",
    "WorkflowDefinition",
    "WorkflowEngine",
    "WorkflowHandle",
    "action",
    "compensate",
    "configure_logging",
    "consume_tokens",
    "define_rate_limit",
    "delegate_by_skill",
    "emit",
    "flow",
    "get_metrics",
    "handoff_to",
    "hedge",
    "init_metrics",
    "is_retryable",
    "load_balanced",
    "new_orchestrator",
    "query_handler",
    "register_action",
    "register_chain_provider",
    "register_graph_provider",
    "register_workflow_provider",
    "report_progress",
    "request_approval",
    "round_robin",
    "scatter_gather",
    "serve",
    "step",
    "use_engine",
    "wait_for_signal",
]
