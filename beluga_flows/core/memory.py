"""BufferMemory: the conversation buffer a :class:`~beluga_flows.Chain` can carry.

Example::

    >>> mem = BufferMemory(k=2)
    >>> mem.save_context({"input": "hi"}, {"output": "hello"})
    >>> mem.load_memory_variables({})
    {'history': 'Human: hi\\nAI: hello'}
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

from beluga_flows._validate import config_error, positive_int

__all__ = ["BufferMemory"]


def _text(values: Mapping[str, Any], skip: str) -> str:
    items = {k: v for k, v in values.items() if k != skip}
    if len(items) == 1:
        return str(next(iter(items.values())))
    return ", ".join(f"{k}={v}" for k, v in items.items())


class BufferMemory:
    """Keeps exchanges (inputs, outputs) and exposes them as one text variable.

    ``k`` keeps only the last ``k`` exchanges (all when ``None``). Thread-safe.
    """

    def __init__(self, memory_key: str = "history", k: int | None = None) -> None:
        if not isinstance(memory_key, str) or not memory_key:
            raise config_error(
                "memory", f"memory_key must be a non-empty string, got {memory_key!r}"
            )
        if k is not None:
            positive_int("memory", "k", k)
        self.memory_key = memory_key
        self.k = k
        self._lock = threading.Lock()
        self._exchanges: deque[tuple[dict[str, Any], dict[str, Any]]] = deque(maxlen=k)

    @property
    def exchanges(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """The kept (inputs, outputs) pairs, oldest first."""
        with self._lock:
            return list(self._exchanges)

    def load_memory_variables(self, inputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``{memory_key: "Human: …\\nAI: …"}`` over the kept exchanges."""
        lines = []
        for given, produced in self.exchanges:
            lines.append(f"Human: {_text(given, self.memory_key)}")
            lines.append(f"AI: {_text(produced, self.memory_key)}")
        return {self.memory_key: "\n".join(lines)}

    def save_context(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
        """Record one exchange."""
        with self._lock:
            self._exchanges.append((dict(inputs), dict(outputs)))

    def clear(self) -> None:
        """Forget every exchange."""
        with self._lock:
            self._exchanges.clear()

    def __repr__(self) -> str:
        return f"BufferMemory(memory_key={self.memory_key!r}, k={self.k!r})"
