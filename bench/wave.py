"""The seed's reference algorithm for running a definition: waves with a barrier.

A loop finds the *ready* steps (every dependency done), runs them all with
``asyncio.gather``, waits for the whole wave to end, and only then looks again. It
takes the same definition dict and the same actions as ``bf.WorkflowEngine`` and
runs them as plain awaits: no records, no retries, no Prefect, no middleware. It is
the baseline ``bench/definitions.py`` compares the engine's makespan with: a wave
costs as long as its slowest step, so a fast branch cannot run ahead.

Supported (what the benchmark's definitions use): ``action`` steps with
``dependencies``, ``input_mapping`` (CEL, compiled once with the same ``cel``
module; the action gets those keyword arguments, else the whole ``data`` mapping),
string ``conditions`` (guards: a false one skips the step), ``global_variables`` and
``max_parallel_steps`` (a semaphore around each call). A step's output is stored at
``data[step_id]``. Anything else raises ``NotImplementedError``.

    runner = WaveRunner(definition_dict, {"fetch": fetch})
    data = await runner.run({"customer_id": "c-1"})
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cel

__all__ = ["WaveRunner"]

_SUPPORTED = {
    "step_id",
    "name",
    "type",
    "action",
    "dependencies",
    "input_mapping",
    "conditions",
}


@dataclass(frozen=True)
class _Expr:
    program: Any
    names: frozenset[str]

    def __call__(self, data: Mapping[str, Any]) -> Any:
        return self.program.execute({n: data[n] for n in self.names if n in data})


def _compile(source: str) -> _Expr:
    program = cel.compile(source)
    return _Expr(program, frozenset(program.variables()))


@dataclass(frozen=True)
class _Step:
    step_id: str
    call: Callable[..., Any]
    dependencies: tuple[str, ...]
    inputs: tuple[tuple[str, _Expr], ...] | None
    guards: tuple[_Expr, ...]


class WaveRunner:
    """Run a definition dict wave by wave (see the module docstring)."""

    def __init__(
        self, definition: Mapping[str, Any], actions: Mapping[str, Callable[..., Any]]
    ) -> None:
        self.globals = dict(definition.get("global_variables") or {})
        self.limit = int(definition.get("max_parallel_steps", 10))
        steps: list[_Step] = []
        for raw in definition["steps"]:
            unknown = set(raw) - _SUPPORTED
            if unknown or raw.get("type", "action") != "action":
                raise NotImplementedError(f"wave runner: step {raw.get('step_id')!r}: {unknown}")
            mapping = raw.get("input_mapping")
            steps.append(
                _Step(
                    step_id=raw["step_id"],
                    call=actions[raw["action"]],
                    dependencies=tuple(raw.get("dependencies") or ()),
                    inputs=None
                    if mapping is None
                    else tuple((k, _compile(v)) for k, v in mapping.items()),
                    guards=tuple(_compile(c) for c in raw.get("conditions") or ()),
                )
            )
        ids = {s.step_id for s in steps}
        for s in steps:
            missing = set(s.dependencies) - ids
            if missing:
                raise ValueError(f"step {s.step_id!r} depends on unknown steps {sorted(missing)}")
        self.steps = steps

    async def run(self, input_data: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run every step; the final ``data`` (each step's output at its step id)."""
        data = {**self.globals, **(input_data or {})}
        limit = asyncio.Semaphore(self.limit)
        done: set[str] = set()
        pending = list(self.steps)
        while pending:
            ready = [s for s in pending if all(d in done for d in s.dependencies)]
            if not ready:
                raise RuntimeError(f"deadlock: {[s.step_id for s in pending]} never ready")
            outputs = await asyncio.gather(*(self._one(s, data, limit) for s in ready))
            for s, (ran, output) in zip(ready, outputs, strict=True):
                if ran:
                    data[s.step_id] = output
                done.add(s.step_id)
            pending = [s for s in pending if s.step_id not in done]
        return data

    async def _one(
        self, s: _Step, data: dict[str, Any], limit: asyncio.Semaphore
    ) -> tuple[bool, Any]:
        if not all(guard(data) for guard in s.guards):
            return False, None
        async with limit:
            if s.inputs is None:
                result = s.call(data)
            else:
                result = s.call(**{k: expr(data) for k, expr in s.inputs})
            if inspect.isawaitable(result):
                result = await result
        return True, result
