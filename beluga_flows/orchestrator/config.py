"""The orchestrator's configuration: one frozen, validated value (API.md §9).

Validated from users (environment, files, ``new_orchestrator(**options)``), so it is a
pydantic model (the design notes keep pydantic for such data). Every mistake is an
``OrchestratorError(INVALID_CONFIG)`` naming the field; durations take seconds or a
``timedelta`` and are normalised once, to float seconds.

Example::

    config = bf.OrchestratorConfig(max_workers=8, chain_timeout=timedelta(minutes=2))
    config.chain_timeout                     # 120.0
    bf.OrchestratorConfig(retries=...)       # INVALID_CONFIG naming the unknown field
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.resilience.stores import BreakerStore, MemoryStore

__all__ = ["EnabledFeatures", "OrchestratorConfig", "config_from"]

MAX_SECONDS = 24 * 3600.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def _seconds(value: Any) -> Any:
    """``timedelta`` → float seconds; numbers pass on to the range checks."""
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bool):
        raise ValueError("must be seconds (a number or a timedelta), not a bool")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number of seconds")
    return value


Timeout = Annotated[float, BeforeValidator(_seconds), Field(gt=0, le=MAX_SECONDS)]
Retries = Annotated[int, Field(ge=0, le=20, strict=True)]
Concurrency = Annotated[int, Field(ge=1, le=10_000, strict=True)]


class EnabledFeatures(BaseModel):
    """Which kinds of object an orchestrator creates; a disabled one → ``INVALID_STATE``
    (``chains_disabled`` …) from its ``create_*``.

    Example::

        bf.OrchestratorConfig(features=bf.EnabledFeatures(workflows=False))
        bf.new_orchestrator(features={"definitions": False})
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    chains: bool = True
    graphs: bool = True
    workflows: bool = True
    definitions: bool = True


class OrchestratorConfig(BaseModel):
    """The defaults and limits of an :class:`~beluga_flows.Orchestrator` (API.md §9).

    Beyond §9: ``name`` names the orchestrator (its Prefect global concurrency limits
    are ``beluga-orch-<name>-chains`` / ``-workflows``), ``record_data`` lets input and
    output data into telemetry (off by default), ``breaker_store`` is the store whose
    reachability :meth:`~beluga_flows.Orchestrator.health` checks (a ``RedisStore`` is
    PINGed; ``None`` means the in-memory default).

    Example::

        config = bf.OrchestratorConfig(max_concurrent_chains=4, queue_size=20,
                                       metrics_prefix="myapp.orchestration")
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", arbitrary_types_allowed=True, validate_default=True
    )

    name: str = "default"
    chain_timeout: Timeout = 300.0
    chain_retries: Retries = 3
    graph_timeout: Timeout = 600.0
    graph_retries: Retries = 3
    max_workers: Annotated[int, Field(ge=1, le=1000, strict=True)] = 5
    parallel: Annotated[bool, Field(strict=True)] = True
    queue_size: Annotated[int, Field(ge=1, le=100_000, strict=True)] = 100
    max_concurrent_chains: Concurrency = 10
    task_queue: Annotated[str, Field(min_length=1, max_length=255, strict=True)] = (
        "beluga-workflows"
    )
    workflow_timeout: Timeout = 1800.0
    workflow_retries: Retries = 5
    max_concurrent_workflows: Concurrency = 50
    metrics_prefix: Annotated[str, Field(min_length=1, strict=True)] = "beluga.orchestration"
    health_check_interval: Annotated[float, BeforeValidator(_seconds), Field(gt=0)] = 30.0
    features: EnabledFeatures = EnabledFeatures()
    record_data: Annotated[bool, Field(strict=True)] = False
    breaker_store: BreakerStore | None = None

    @field_validator("chain_timeout", "graph_timeout", "workflow_timeout", "health_check_interval")
    @classmethod
    def _finite_seconds(cls, value: float) -> float:
        return _finite(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not isinstance(value, str) or not _NAME.match(value):
            raise ValueError("must be 1..100 letters, digits, '_', '.' or '-'")
        return value

    @field_validator("metrics_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty string")
        return value

    @field_validator("breaker_store", mode="before")
    @classmethod
    def _store(cls, value: Any) -> Any:
        if value is not None and not all(hasattr(value, m) for m in ("load", "update")):
            raise ValueError("must be a breaker store (MemoryStore, RedisStore)")
        return value

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise invalid(err) from None

    @property
    def store(self) -> BreakerStore:
        """The breaker store in use (``breaker_store``, else an in-memory one)."""
        return self.breaker_store if self.breaker_store is not None else MemoryStore()


def invalid(err: ValidationError) -> OrchestratorError:
    """One ``INVALID_CONFIG`` naming every bad field (``features.chains``, …)."""
    problems = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "config"
        if e["type"] == "extra_forbidden":
            problems.append(f"{path}: unknown option")
        else:
            message = e["msg"].removeprefix("Value error, ")
            problems.append(f"{path}: {message} (got {e.get('input')!r})")
    fields = [".".join(str(p) for p in e["loc"]) for e in err.errors()]
    return OrchestratorError("config", "; ".join(problems), ErrorCode.INVALID_CONFIG, fields=fields)


def config_from(
    config: OrchestratorConfig | Mapping[str, Any] | None, options: Mapping[str, Any]
) -> OrchestratorConfig:
    """``config`` (a config, a mapping of fields or ``None``) with ``options`` over it."""
    if config is None:
        return OrchestratorConfig(**options)
    if isinstance(config, OrchestratorConfig):
        if not options:
            return config
        fields = {k: getattr(config, k) for k in OrchestratorConfig.model_fields}
        return OrchestratorConfig(**{**fields, **options})
    if isinstance(config, Mapping):
        return OrchestratorConfig(**{**config, **options})
    raise OrchestratorError(
        "config",
        f"config must be an OrchestratorConfig or a mapping, got {config!r}",
        ErrorCode.INVALID_CONFIG,
    )
