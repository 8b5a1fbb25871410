"""Hooks: callbacks around every member a chain or graph runs.

A :class:`Hooks` value is a small frozen record of three kinds of callback, each
given as one callable or a sequence of them (run in the order given); sync or
async::

    before_step(name, input)            # before the member runs
    after_step(name, input, output)     # after it produced an output
    on_error(name, input, error)        # after it failed (its retries spent)

Hooks are carried out by :func:`run_hooked`, which
:func:`beluga_flows.core.middleware.run_member` calls: the one way a chain or a
graph runs a member, so chains and graphs share them. ``name`` is the chain step's
or the graph node's name.

* ``on_error`` may *return* a value: the member then succeeds with it (a graph
  node's replacement is its update, a dict or ``None``), and ``after_step`` sees it.
  It may *raise* to decline: the next ``on_error`` gets what it raised; once every
  one has declined, the last error raised propagates with the usual chain or graph
  semantics (re-raising the error it was given keeps the original one).
* An error raised by ``before_step`` or ``after_step`` is the member's failure
  (``on_error`` is not asked about it).
* Sync hooks run on the event loop, like graph routers: keep them quick (log,
  count, collect), or make them ``async``.
* The member's own retries happen inside the member: ``on_error`` hears of the
  final failure only. A chain's or graph's ``retries`` re-run the whole run, hooks
  included.

Example::

    seen = []
    hooks = bf.Hooks(before_step=lambda name, value: seen.append(name),
                     on_error=lambda name, value, err: {"answer": "n/a"})
    bf.Chain([fetch, summarise], hooks=hooks).invoke({"input": "q"})
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from beluga_flows import _sync
from beluga_flows._validate import config_error

__all__ = ["Hooks", "check_hooks", "run_hooked"]

Hook = Callable[..., Any]


def _callables(field: str, value: Any) -> tuple[Hook, ...]:
    if value is None:
        return ()
    items = (value,) if callable(value) else value
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise config_error(
            "hooks", f"{field} must be a callable or a list of callables, got {value!r}"
        )
    for item in items:
        if not callable(item) or isinstance(item, type):
            raise config_error("hooks", f"{field} must hold callables, got {item!r}")
    return tuple(items)


@dataclass(frozen=True, init=False)
class Hooks:
    """Callbacks around each member of a chain or graph (see the module docs).

    Example::

        hooks = bf.Hooks(before_step=[log_start, count], after_step=log_end)
        graph = bf.Graph(name="g", hooks=hooks)
    """

    before_step: tuple[Hook, ...]
    after_step: tuple[Hook, ...]
    on_error: tuple[Hook, ...]

    def __init__(self, before_step: Any = None, after_step: Any = None, on_error: Any = None):
        object.__setattr__(self, "before_step", _callables("before_step", before_step))
        object.__setattr__(self, "after_step", _callables("after_step", after_step))
        object.__setattr__(self, "on_error", _callables("on_error", on_error))

    def __add__(self, other: Hooks) -> Hooks:
        """Both hooks, ``self``'s first."""
        if not isinstance(other, Hooks):
            return NotImplemented
        return Hooks(
            self.before_step + other.before_step,
            self.after_step + other.after_step,
            self.on_error + other.on_error,
        )


def check_hooks(owner: str, value: Any) -> Hooks | None:
    """``hooks=`` of a chain or graph: a :class:`Hooks`, a list of them (combined in
    order) or ``None`` (nothing to run, as is an empty ``Hooks()``)."""
    if value is None:
        return None
    items = [value] if isinstance(value, Hooks) else value
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise config_error(owner, f"hooks must be bf.Hooks or a list of them, got {value!r}")
    combined = Hooks()
    for item in items:
        if not isinstance(item, Hooks):
            raise config_error(owner, f"hooks must be bf.Hooks or a list of them, got {item!r}")
        combined += item
    if not (combined.before_step or combined.after_step or combined.on_error):
        return None
    return combined


async def _fire(hook: Hook, *args: Any) -> Any:
    return await _sync.settled(hook(*args))


async def run_hooked(
    hooks: Hooks, name: str, value: Any, body: Callable[[], Awaitable[Any]]
) -> Any:
    """``await body()`` (one member run on ``value``) with ``hooks`` around it."""
    for before in hooks.before_step:
        await _fire(before, name, value)
    try:
        output = await body()
    except Exception as err:
        if not hooks.on_error:
            raise
        output = await _handled(hooks.on_error, name, value, err)
    for after in hooks.after_step:
        await _fire(after, name, value, output)
    return output


async def _handled(handlers: Sequence[Hook], name: str, value: Any, err: Exception) -> Any:
    """The first replacement an ``on_error`` returns; all declined → the last error."""
    for handler in handlers:
        try:
            return await _fire(handler, name, value, err)
        except Exception as declined:
            err = declined
    raise err
