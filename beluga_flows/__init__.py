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
"""

from beluga_flows.core.decorators import Flow, FlowSpec, Step, StepSpec, flow, step
from beluga_flows.core.memory import BufferMemory
from beluga_flows.core.runnable import Runnable
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
from beluga_flows.graph.patterns import Router, scatter_gather
from beluga_flows.resilience.breaker import CircuitBreaker, CircuitState
from beluga_flows.resilience.limits import define_rate_limit
from beluga_flows.resilience.retry import RetryPolicy
from beluga_flows.resilience.stores import BreakerStore, MemoryStore, RedisStore

__version__ = "0.1.0"

__all__ = [
    "END",
    "START",
    "Approval",
    "BreakerStore",
    "BufferMemory",
    "Chain",
    "CircuitBreaker",
    "CircuitState",
    "CompiledGraph",
    "Engine",
    "ErrorCode",
    "Flow",
    "FlowSpec",
    "Graph",
    "GraphReport",
    "GraphResult",
    "LocalEngine",
    "MemoryStore",
    "NodeStatus",
    "OrchestratorError",
    "RedisStore",
    "RetryPolicy",
    "Router",
    "Runnable",
    "Step",
    "StepSpec",
    "StepStatus",
    "Workflow",
    "WorkflowClient",
    "WorkflowHandle",
    "compensate",
    "define_rate_limit",
    "flow",
    "is_retryable",
    "query_handler",
    "report_progress",
    "request_approval",
    "scatter_gather",
    "serve",
    "step",
    "use_engine",
    "wait_for_signal",
]
