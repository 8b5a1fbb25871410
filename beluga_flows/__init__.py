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

from ._breaker_store import BreakerStore, MemoryStore, RedisStore
from .breaker import CircuitBreaker, CircuitState
from .chain import Chain
from .decorators import Flow, FlowSpec, Step, StepSpec, flow, step
from .engine import Engine, LocalEngine, use_engine
from .errors import ErrorCode, OrchestratorError, is_retryable
from .graph import END, START, CompiledGraph, Graph, GraphReport, GraphResult, NodeStatus
from .inside import (
    Approval,
    compensate,
    query_handler,
    report_progress,
    request_approval,
    wait_for_signal,
)
from .limits import define_rate_limit
from .memory import BufferMemory
from .patterns import Router, scatter_gather
from .retry import RetryPolicy
from .runnable import Runnable
from .workflow import StepStatus, Workflow, WorkflowClient, WorkflowHandle, serve

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
