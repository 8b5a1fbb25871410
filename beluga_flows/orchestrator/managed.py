"""What an orchestrator hands out: objects whose every run goes through its gate.

A :class:`Gate` (one per kind per orchestrator) admits a run (:class:`Admission`: at
most ``max_concurrent_*`` at once, ``queue_size`` more waiting, then
``RESOURCE_EXHAUSTED``), holds the orchestrator's Prefect global concurrency limit
when the object runs on Prefect (``beluga-orch-<name>-chains``: the same bound across
processes), counts the run in the orchestrator's
:class:`~beluga_flows.telemetry.RunCounters` and runs it under the orchestrator's
metric prefix and ``record_data`` setting.

The orchestrator counts exactly the runs of the objects it created: one per
``invoke``/``stream`` of a chain or graph (a plain chain used inside it is not a run
of this orchestrator's), one per workflow run, one per definition execution. The
inner object runs with no extra counters in force, so nothing is counted twice; the
process-wide figures (``bf.get_metrics()``) count every run as before.

Example::

    chain = Managed(bf.Chain([a, b]), orchestrator.gates["chain"])
    chain.invoke({"input": "x"})           # admitted, counted, under the prefix
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from beluga_flows import telemetry
from beluga_flows.core import middleware
from beluga_flows.core.runnable import Runnable
from beluga_flows.core.specs import StepSpec
from beluga_flows.definitions.engine import WorkflowEngine
from beluga_flows.definitions.records import ExecutionResult
from beluga_flows.engine import get_engine
from beluga_flows.orchestrator.admission import Admission

__all__ = ["Gate", "Managed", "ManagedDefinition", "Outcome", "admitted"]


@dataclass
class Outcome:
    """Whether the run in a :meth:`Gate.run` block succeeded (a body may say no
    without raising: a definition run whose status is ``failed``)."""

    ok: bool = True


@dataclass
class Gate:
    """Admission, the cross-process limit, counting and telemetry context of one kind
    of run (``chain``, ``graph``, ``workflow``, ``definition``) of one orchestrator.

    Example::

        async with gate.run(engine="prefect", timeout=300) as outcome:
            ...
    """

    kind: str
    counters: telemetry.RunCounters
    prefix: str
    record_data: bool
    admission: Admission | None = None
    limit_name: str | None = None  # the Prefect global concurrency limit

    @contextlib.asynccontextmanager
    async def run(
        self, engine: str | None = None, timeout: float | None = None
    ) -> AsyncIterator[Outcome]:
        """Admit, count and run the body (``engine="prefect"`` also holds the global
        limit, waiting at most ``timeout`` seconds for it: ``RESOURCE_EXHAUSTED``)."""
        async with contextlib.AsyncExitStack() as stack:
            if self.admission is not None:
                await self.admission.acquire()
                stack.callback(self.admission.release)
            if engine == "prefect" and self.admission is not None and self.limit_name:
                spec = StepSpec(
                    name=self.limit_name,
                    concurrency=self.limit_name,
                    max_concurrency=self.admission.limit,
                    timeout=timeout,
                )
                await stack.enter_async_context(get_engine("prefect").limits(spec))
            outcome = Outcome()
            self.counters.started(self.kind)
            try:
                with (
                    telemetry.use_prefix(self.prefix),
                    telemetry.use_record_data(self.record_data),
                    telemetry.use_counters(None),
                ):
                    yield outcome
            except GeneratorExit:  # a stream closed early by its reader
                raise
            except BaseException:
                outcome.ok = False
                raise
            finally:
                self.counters.finished(self.kind, outcome.ok)


class Managed(Runnable):
    """A chain or graph made by an orchestrator: a :class:`~beluga_flows.Runnable` whose
    runs go through the orchestrator's gate; everything else is the inner object's.

    Methods of the inner object that return it (``add_node`` …) return this wrapper,
    and one that returns another Runnable (``compile()``) returns it wrapped too, so
    no run escapes the orchestrator. ``inner`` is the object the provider built.

    Example::

        g = orch.create_graph(name="research")
        g.add_node("plan", plan).add_edge(bf.START, "plan")
        g.compile().invoke({"question": "..."})        # admitted and counted
    """

    def __init__(
        self, inner: Runnable, gate: Gate, engine: str | None, timeout: float | None
    ) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", gate.kind)
        self._gate = gate
        self._engine = engine
        self._timeout = timeout

    async def ainvoke(self, input: Any, **opts: Any) -> Any:
        """Run the inner object once, admitted and counted."""
        async with self._gate.run(self._engine, self._timeout):
            return await self.inner.ainvoke(input, **opts)

    async def astream(self, input: Any, **opts: Any) -> AsyncIterator[Any]:
        """Stream the inner object's output; the run holds its slot until the end."""
        async with self._gate.run(self._engine, self._timeout):
            async for chunk in self.inner.astream(input, **opts):
                yield chunk

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        if not callable(value) or isinstance(value, Runnable) or not hasattr(value, "__self__"):
            return value

        @functools.wraps(value)
        def forward(*args: Any, **kwargs: Any) -> Any:
            return self._wrap(value(*args, **kwargs))

        return forward

    def _wrap(self, result: Any) -> Any:
        if result is self.inner:
            return self
        if isinstance(result, Runnable) and not isinstance(result, Managed):
            return Managed(result, self._gate, self._engine, self._timeout)
        return result

    def __repr__(self) -> str:
        return f"<managed {self.inner!r}>"


def admitted(
    fn: Callable[..., Any], gate: Gate, engine: str | None, timeout: float | None
) -> Callable[..., Any]:
    """``fn`` (sync or async) as an async workflow body that runs admitted and counted
    wherever the run executes. A sync ``fn`` still runs in a worker thread (as any
    sync flow body), so ``wait_for_signal`` is called plainly in it."""

    @functools.wraps(fn)
    async def body(*args: Any, **kwargs: Any) -> Any:
        async with gate.run(engine, timeout):
            return await middleware.call(fn, args, kwargs)

    return body


class ManagedDefinition(Runnable):
    """A workflow definition bound to a :class:`~beluga_flows.WorkflowEngine`, made by
    :meth:`~beluga_flows.Orchestrator.create_definition`: validated when created,
    ``invoke(input_data)`` executes it (admitted like a workflow, counted in
    ``active_workflows``) and returns the :class:`~beluga_flows.ExecutionResult`
    (a run that does not complete counts in ``error_count``; it is returned, not
    raised, as from ``engine.execute``).

    Example::

        onboarding = orch.create_definition("workflows/onboarding.yaml", provider="local")
        result = onboarding.invoke({"customer_id": "c-1"})
        onboarding.start({"customer_id": "c-2"}, workflow_id="onb-c-2")   # durable
    """

    def __init__(self, engine: WorkflowEngine, definition: Any, gate: Gate) -> None:
        self.engine = engine
        self.plan = engine.compile(definition)  # every problem, before anything runs
        self.definition = self.plan.definition
        self.name = self.definition.workflow_id
        self._gate = gate

    async def ainvoke(self, input: Any = None, **opts: Any) -> ExecutionResult:
        """Execute once (``execution_options=`` as for ``engine.execute``)."""
        provider = self.engine.provider
        engine = provider if isinstance(provider, str) else get_engine(provider).name
        async with self._gate.run(engine, self.definition.timeout) as outcome:
            result = await self.engine.aexecute(
                self.definition, input or {}, opts.get("execution_options")
            )
            outcome.ok = result.status == "completed"
            return result

    def validate(self) -> list[Any]:
        """The definition's problems with this engine's actions (``[]``: it runs)."""
        return self.engine.validate(self.definition)

    def start(self, input_data: Any = None, workflow_id: str | None = None) -> Any:
        """Start a durable run on Prefect (``engine.start``); it runs as a workflow
        of its own, outside this orchestrator's admission."""
        return self.engine.start(self.definition, input_data, workflow_id=workflow_id)

    def draw_mermaid(self) -> str:
        """The definition as a mermaid flowchart."""
        return self.engine.draw_mermaid(self.definition)

    def __repr__(self) -> str:
        return f"<managed definition {self.name!r}>"
