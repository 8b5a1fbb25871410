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

from .chain import Chain
from .decorators import Flow, FlowSpec, Step, StepSpec, flow, step
from .engine import Engine, LocalEngine, use_engine
from .errors import ErrorCode, OrchestratorError, is_retryable
from .memory import BufferMemory
from .retry import RetryPolicy
from .runnable import Runnable

__version__ = "0.1.0"

__all__ = [
    "BufferMemory",
    "Chain",
    "Engine",
    "ErrorCode",
    "Flow",
    "FlowSpec",
    "LocalEngine",
    "OrchestratorError",
    "RetryPolicy",
    "Runnable",
    "Step",
    "StepSpec",
    "flow",
    "is_retryable",
    "step",
    "use_engine",
]
