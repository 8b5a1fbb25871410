"""Chain: steps run one after another, each receiving the previous one's output.

Example::

    import beluga_flows as bf

    chain = bf.Chain([load, clean, summarise], name="report", timeout=60)
    chain.invoke({"input": "data.csv"})
    (load | clean | summarise).invoke({"input": "data.csv"})   # the same, unnamed

Invoked outside a flow a chain starts its own flow run; inside one its steps are
task runs of the current flow run. Each member runs through the middleware stack
(:func:`beluga_flows.core.middleware.run_member`: a ``chain.step`` span, then the
step's own stack); the chain's timeout and retries are the stack's one timeout
(:func:`~beluga_flows.core.middleware.call_with_timeout`) and one retry loop.

A chain does not compile to a separate plan: it has no edges, routes or defaults to
resolve, every option is validated in ``__init__``, and its members are already a
frozen tuple — a plan would be a copy of that tuple. What a plan would precompute
is kept beside it (the per-member span attributes), so the hot path builds nothing
per step; running a chain through the graph scheduler instead would cost several
times the ≤ 10 µs per inline step that a chain is held to.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any, cast

from beluga_flows import telemetry
from beluga_flows._validate import config_error, non_negative_int, seconds
from beluga_flows.core import middleware, streams
from beluga_flows.core.decorators import as_step
from beluga_flows.core.hooks import Hooks, check_hooks
from beluga_flows.core.memory import BufferMemory
from beluga_flows.core.runnable import Runnable, register_pipe
from beluga_flows.engine import Engine, get_engine, use_engine
from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.resilience.retry import RetryPolicy

__all__ = ["Chain"]


def _keys(field: str, value: Any) -> tuple[str, ...]:
    keys = (value,) if isinstance(value, str) else value
    try:
        keys = tuple(keys)
    except TypeError:
        raise config_error("chain", f"{field} must be strings, got {value!r}") from None
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise config_error("chain", f"{field} must be non-empty strings, got {value!r}")
    return keys


class Chain(Runnable):
    """A sequence of steps (any callables or Runnables).

    * A ``str`` input becomes ``{input_key: value}`` when there is one input key.
    * With ``memory`` the first step gets the input merged over the memory
      variables, and ``save_context(inputs, outputs)`` runs after the last step.
    * ``provider`` picks the engine (``"prefect"``, ``"local"``); ``None`` means the
      engine in force (Prefect unless ``$BELUGA_FLOWS_PROVIDER`` or an enclosing run
      says otherwise).
    * A failing step raises ``EXECUTION_FAILED`` naming it (index and name) with the
      original error as ``__cause__``; ``timeout`` bounds the whole chain
      (``TIMEOUT``); ``retries`` re-runs the whole chain with backoff.
    * ``hooks`` (:class:`~beluga_flows.Hooks`, or a list of them) run around each
      step; an ``on_error`` replacement becomes that step's output.
    """

    def __init__(
        self,
        steps: Sequence[Any] = (),
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: Any = None,
        retries: int = 0,
        memory: BufferMemory | None = None,
        input_keys: Sequence[str] = ("input",),
        output_keys: Sequence[str] = ("output",),
        provider: str | Engine | None = None,
        hooks: Hooks | Sequence[Hooks] | None = None,
    ) -> None:
        if isinstance(steps, str | bytes) or not isinstance(steps, Sequence):
            raise config_error("chain", f"steps must be a list, got {steps!r}")
        for i, s in enumerate(steps):
            if not (isinstance(s, Runnable) or callable(s)) or isinstance(s, type):
                raise config_error("chain", f"step {i} is not callable: {s!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise config_error("chain", f"name must be a non-empty string, got {name!r}")
        if memory is not None and not all(
            hasattr(memory, m) for m in ("load_memory_variables", "save_context")
        ):
            raise config_error(
                "chain", f"memory must provide load_memory_variables/save_context, got {memory!r}"
            )
        self.steps: tuple[Runnable, ...] = tuple(as_step(s, "chain") for s in steps)
        self.name = name or "chain"
        self.description = description
        self.timeout = seconds("chain", "timeout", timeout)
        self.retries = non_negative_int("chain", "retries", retries, maximum=20)
        self.memory = memory
        self.input_keys = _keys("input_keys", input_keys)
        self.output_keys = _keys("output_keys", output_keys)
        self.provider = provider
        if provider is not None:
            get_engine(provider)  # unknown provider → NOT_FOUND now, not at run time
        self.hooks = check_hooks("chain", hooks)
        self._policy = RetryPolicy.from_retries(self.retries) if self.retries else None
        # The span attributes of each member's ``chain.step``, built once.
        self._sites = tuple(
            {"chain.name": self.name, "step.name": s.name, "step.index": i}
            for i, s in enumerate(self.steps)
        )

    # ------------------------------------------------------------ composition

    @classmethod
    def pipe(cls, left: Any, right: Any) -> Chain:
        """``left | right``: plain chains are flattened, configured ones nested."""
        parts: list[Any] = []
        for side in (left, right):
            if type(side) is Chain and side._is_plain():
                parts.extend(side.steps)
            else:
                parts.append(side)
        return cls(parts)

    def _is_plain(self) -> bool:
        return (
            self.name == "chain"
            and self.timeout is None
            and not self.retries
            and self.memory is None
            and self.input_keys == ("input",)
            and self.output_keys == ("output",)
            and self.provider is None
            and self.hooks is None
        )

    # ------------------------------------------------------------ input / output

    def prepare_input(self, input: Any) -> Any:
        """The first step's input, validated before anything runs (``INVALID_INPUT``)."""
        if isinstance(input, str):
            if len(self.input_keys) != 1:
                raise OrchestratorError(
                    "chain",
                    f"a str input needs exactly one input key, chain {self.name!r} has "
                    f"{list(self.input_keys)}",
                    ErrorCode.INVALID_INPUT,
                )
            input = {self.input_keys[0]: input}
        if self.memory is None:
            return dict(input) if isinstance(input, Mapping) else input
        if not isinstance(input, Mapping):
            raise OrchestratorError(
                "chain",
                f"chain {self.name!r} has memory and needs a mapping input, "
                f"got {type(input).__name__}",
                ErrorCode.INVALID_INPUT,
            )
        return {**self.memory.load_memory_variables(input), **input}

    def _outputs(self, output: Any) -> dict[str, Any]:
        if isinstance(output, Mapping):
            return dict(output)
        if len(self.output_keys) == 1:
            return {self.output_keys[0]: output}
        raise OrchestratorError(
            "chain",
            f"chain {self.name!r} has output keys {list(self.output_keys)}: its last step must "
            f"return a mapping to save to memory, got {type(output).__name__}",
            ErrorCode.INVALID_INPUT,
        )

    # ------------------------------------------------------------ running

    async def _run_steps(self, engine: Engine, value: Any, steps: Sequence[Runnable]) -> Any:
        sites = self._sites
        for index, member in enumerate(steps):
            try:
                value = await middleware.run_member(
                    engine, member, value, "chain.step", sites[index], self.hooks
                )
            except Exception as err:
                raise OrchestratorError(
                    "chain",
                    f"step {index} {member.name!r} failed: {err}",
                    ErrorCode.EXECUTION_FAILED,
                    step=member.name,
                    step_index=index,
                ) from err
        return value

    async def _body(self, engine: Engine, first: Any, steps: Sequence[Runnable]) -> Any:
        async def attempt() -> Any:
            if self.timeout is None:
                return await self._run_steps(engine, first, steps)
            return await middleware.call_with_timeout(
                self._run_steps,
                (engine, first, steps),
                {},
                self.timeout,
                op="chain",
                name=self.name,
                preempt=False,  # a chain only orchestrates: its members bound themselves
                what=f"chain {self.name!r}",
            )

        with use_engine(engine):
            return await middleware.retrying(
                attempt, self._policy, sleep=engine.sleep, rng=engine.rng
            )

    async def _execute(self, input: Any, steps: Sequence[Runnable], provider: Any) -> Any:
        engine = get_engine(provider or self.provider)
        first = self.prepare_input(input)
        attrs = {"chain.steps": len(self.steps)}
        async with telemetry.execution("chain", self.name, attrs=attrs, input=first) as sp:
            output = await engine.in_flow(
                self.name,
                lambda v: self._body(engine, v, steps),
                first,
                description=self.description,
                tags=("beluga:chain",),
            )
            telemetry.record_value(sp, "output", output)
            return first, output

    async def ainvoke(self, input: Any, **opts: Any) -> Any:
        """Run the chain; ``provider=`` overrides the chain's provider for this call."""
        first, output = await self._execute(input, self.steps, opts.get("provider"))
        if self.memory is not None:
            self.memory.save_context(_memory_inputs(first, self.memory), self._outputs(output))
        return output

    async def astream(self, input: Any, **opts: Any) -> AsyncIterator[Any]:
        """Run all steps but the last, then stream the last step's output (a streaming
        step's chunks as they are yielded)."""
        if not self.steps:
            yield self.prepare_input(input)
            return
        *head, last = self.steps
        first, value = await self._execute(input, head, opts.get("provider"))
        engine = get_engine(opts.get("provider") or self.provider)
        with use_engine(engine):
            chunks = []
            chunks_of = cast(AsyncGenerator[Any, None], last.astream(value))
            async with contextlib.aclosing(chunks_of) as stream:
                async for chunk in stream:
                    chunks.append(chunk)
                    yield chunk
        if self.memory is not None:
            if getattr(getattr(last, "spec", None), "streaming", False):
                output = streams.joined(chunks)  # what invoking the streaming step returns
            else:
                output = chunks[0] if len(chunks) == 1 else chunks
            self.memory.save_context(_memory_inputs(first, self.memory), self._outputs(output))

    def __repr__(self) -> str:
        return f"Chain({[s.name for s in self.steps]!r}, name={self.name!r})"


def _memory_inputs(first: Any, memory: Any) -> dict[str, Any]:
    key = getattr(memory, "memory_key", None)
    return {k: v for k, v in first.items() if k != key}


register_pipe(Chain.pipe)  # ``a | b`` in the core builds a Chain (see core.runnable)
