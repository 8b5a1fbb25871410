"""Content digests that are the same in every process: what durable keys and step
caches are made of.

A digest hashes a value's *content*, canonically, never its pickle: a pickle of a
set (and so of every pydantic v2 model, whose ``__pydantic_fields_set__`` is a set,
and of any dataclass holding one) lists the elements in hash-seed order, which
differs between processes (``PYTHONHASHSEED``). A resumed workflow that derived a
different key for the same input would run a completed step again.

The canonical form is JSON: JSON values stay as they are (so a JSON input hashes as
it always did), and everything else becomes a tagged JSON value:

* pydantic models → their ``model_dump()`` (python mode: JSON mode lists a set in
  hash order); dataclasses → their fields;
* sets and frozensets → their canonical elements, sorted by their JSON text;
* dicts with non-string keys → sorted ``[key, value]`` pairs;
* enums, bytes, dates and times, UUIDs, decimals, paths → their text;
* other objects → their class and ``vars()``, when they have any.

A value with none of these shapes falls back to its pickle (correct whenever it
holds no set); one that does not pickle has no digest (``None``): it is never cached.

Example::

    >>> digest(({"b", "a"},), {}) == digest(({"a", "b"},), {})
    True
    >>> digest(([1, 2],), {}) == digest(([2, 1],), {})
    False
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import json
import pathlib
import pickle
import uuid
from typing import Any

__all__ = ["canonical", "digest"]

_MAX_DEPTH = 200
_TEXT_TYPES = (
    dt.datetime,
    dt.date,
    dt.time,
    dt.timedelta,
    uuid.UUID,
    decimal.Decimal,
    pathlib.PurePath,
)


class _NoCanonicalForm(Exception):
    """The value has no canonical JSON form (the digest falls back to a pickle)."""


def _type_name(value: Any) -> str:
    # The qualified name without the module: the same file is ``__main__`` when run as
    # a script and ``flows.orders`` when the CLI loads it, and both must find the step.
    return type(value).__qualname__


def _text(value: Any) -> str:
    # json.dumps' default separators: a JSON input keeps the digest it always had.
    return json.dumps(value, sort_keys=True)


def canonical(value: Any, _depth: int = 0) -> Any:
    """``value`` as a JSON value that depends only on its content (see the module
    docstring). Raises ``_NoCanonicalForm`` for values with no such form."""
    if _depth > _MAX_DEPTH:
        raise _NoCanonicalForm("nested too deeply (a cycle?)")
    deeper = _depth + 1
    if value is None or isinstance(value, bool | int | float | str):
        if isinstance(value, enum.Enum):  # IntEnum, StrEnum: keep the class apart
            return {"__enum__": _type_name(value), "value": canonical(value.value, deeper)}
        return value
    if isinstance(value, list | tuple):
        return [canonical(v, deeper) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: canonical(v, deeper) for k, v in value.items()}
        pairs = [[canonical(k, deeper), canonical(v, deeper)] for k, v in value.items()]
        return {"__dict__": sorted(pairs, key=_text)}
    if isinstance(value, set | frozenset):
        return {"__set__": sorted((canonical(v, deeper) for v in value), key=_text)}
    return _tagged(value, deeper)


def _tagged(value: Any, depth: int) -> Any:
    """Non-JSON values: a tag naming what they are, and their canonical content."""
    if isinstance(value, enum.Enum):
        return {"__enum__": _type_name(value), "value": canonical(value.value, depth)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"__bytes__": bytes(value).hex()}
    if isinstance(value, _TEXT_TYPES):
        return {"__" + type(value).__name__ + "__": str(value)}
    dump = getattr(value, "model_dump", None)
    if callable(dump) and hasattr(type(value), "model_fields"):  # a pydantic v2 model
        # Python mode, not mode="json": JSON mode turns a set into a list in hash order.
        return {"__model__": _type_name(value), "data": canonical(dump(), depth)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {"__dataclass__": _type_name(value), "fields": canonical(fields, depth)}
    state = getattr(value, "__dict__", None)
    if isinstance(state, dict) and state and not callable(value):
        return {"__object__": _type_name(value), "state": canonical(state, depth)}
    raise _NoCanonicalForm(_type_name(value))


def digest(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """A sha256 of a call's arguments that is the same in every process for the same
    content; ``None`` when they have no canonical form and do not pickle."""
    try:
        blob = b"j" + _text([canonical(list(args)), canonical(kwargs)]).encode()
    except (_NoCanonicalForm, RecursionError):
        try:
            blob = b"p" + pickle.dumps((args, sorted(kwargs.items())), protocol=5)
        except Exception:
            return None
    return hashlib.sha256(blob).hexdigest()
