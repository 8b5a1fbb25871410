"""The watcher: one per event loop, for every live workflow run hosted on it. Part
of the Prefect adapter.

Its API load does not grow with the number of runs it watches. Each tick is one
query for the runs of its own that have mail (the ``beluga:mail`` tag a sender
sets, see :mod:`.messages`); only those runs' inboxes are read. Every
``STATE_POLLS`` polls one more query finds its runs that someone cancelled from
outside (the UI's *Cancel*, a state forced by ``cancel``), and, while runs wait on an
approval form, one finds those whose pause was resumed. The tick starts at ``POLL``
seconds and backs off to ``2 * POLL`` while nothing arrives.

What a message does to the run:

* signal, approval answer, approval decision → queued on the :class:`LiveRun`;
* cancel → flagged for the next step boundary; terminate → the body stops now;
* query → answered from the run's handler (``bfreply-…``).

Each message is applied once (a message whose log write failed is read again, and
only logged and removed the second time).
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, FlowRunInput, StateType
from prefect.logging import get_logger

from beluga_flows.durable.live import LiveRun
from beluga_flows.engine.prefect import messages, runs

__all__ = ["Watcher", "look_now", "unwatch", "watch"]

_log = get_logger("beluga_flows.workflow")
STATE_POLLS = 10  # a look at the runs' states every this many polls (5 s by default)
_CHUNK = 1000  # run ids per query
_API_LIMIT = 200  # the most runs Prefect's API returns at once (the rest: next tick)
_PAGE = 200  # inbox messages per read
# A custom query for a name with no handler waits this long after the run starts
# before it is answered INVALID_INPUT: the body may not have registered it yet.
HANDLER_GRACE = 3.0


@dataclass(eq=False)
class _Watched:
    run: LiveRun
    stop: Callable[[], Any]
    taken: set[str] = field(default_factory=set)  # suffixes of the messages applied


class Watcher:
    """Watches the live runs of one event loop (see the module docstring)."""

    def __init__(self) -> None:
        self.watched: dict[str, _Watched] = {}
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def add(self, run: LiveRun, stop: Callable[[], Any]) -> None:
        """Watch ``run``; ``stop()`` ends its body at once (terminate)."""
        self.watched[run.run_id] = _Watched(run, stop)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._loop())

    def remove(self, run_id: str) -> None:
        """Stop watching a run (it ended)."""
        self.watched.pop(run_id, None)

    async def _loop(self) -> None:
        # A run added while the client closes (an ``await``: ``add`` then sees this
        # task still running and starts no other) is watched by another round here:
        # the check after the close has no ``await`` before the task ends.
        while self.watched:
            await self._rounds()

    async def _rounds(self) -> None:
        poll = runs.POLL
        interval, state_period, last_states = poll, STATE_POLLS * poll, 0.0
        async with get_client() as client:
            while self.watched:
                try:
                    looks = time.monotonic() - last_states >= state_period
                    active = await self._tick(client, looks)
                    if looks:
                        last_states = time.monotonic()
                    self._failing = False
                except Exception as err:  # an API blip must not kill the runs
                    active = False
                    if not self._failing:
                        _log.warning("workflow watcher: poll failed (%s); retrying", err)
                    self._failing = True
                interval = poll if active else min(interval * 1.25, 2 * poll)
                await asyncio.sleep(interval)

    async def _tick(self, client: PrefectClient, look_at_states: bool) -> bool:
        ids = list(self.watched)
        mailed: list[FlowRun] = []
        for chunk in _chunks(ids):
            mailed += await _read_runs(client, chunk, tags=[messages.MAIL])
        for fr in mailed:
            if (w := self.watched.get(str(fr.id))) is not None:
                await client.update_flow_run(fr.id, tags=[t for t in fr.tags if t != messages.MAIL])
                await _take_inbox(client, w, fr)
        if look_at_states:
            await self._look_at_states(client, ids)
        return bool(mailed)

    async def _look_at_states(self, client: PrefectClient, ids: list[str]) -> None:
        changed: list[FlowRun] = []
        for chunk in _chunks(ids):
            changed += await _read_runs(
                client, chunk, states=[StateType.CANCELLING, StateType.CANCELLED]
            )
            paused = [i for i in chunk if (w := self.watched.get(i)) and w.run.paused]
            if paused:
                changed += await _read_runs(client, paused, states=[StateType.RUNNING])
        for fr in changed:
            if (w := self.watched.get(str(fr.id))) is not None:
                await _take_inbox(client, w, fr)


_WATCHERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Watcher] = (
    weakref.WeakKeyDictionary()
)


def _watcher() -> Watcher:
    loop = asyncio.get_running_loop()
    found = _WATCHERS.get(loop)
    if found is None:
        found = _WATCHERS[loop] = Watcher()
    return found


def watch(run: LiveRun, stop: Callable[[], Any]) -> None:
    """Have this loop's watcher watch ``run``."""
    _watcher().add(run, stop)


def unwatch(run: LiveRun) -> None:
    """The run ended: its watcher forgets it."""
    _watcher().remove(run.run_id)


async def look_now(run: LiveRun) -> None:
    """Read the run's state and inbox now (at its start, before it pauses)."""
    w = _watcher().watched.get(run.run_id) or _Watched(run, lambda: None)
    async with get_client() as client:
        fr = await client.read_flow_run(run.run_id)  # type: ignore[arg-type]
        await _take_inbox(client, w, fr)


# ---------------------------------------------------------------- one run


async def _take_inbox(client: PrefectClient, w: _Watched, fr: FlowRun) -> None:
    """Apply the run's new messages, oldest first, then what its state says."""
    items = await client.filter_flow_run_input(fr.id, messages.INBOX, _PAGE, set())
    deferred = False
    for item in sorted(items, key=lambda i: i.key):
        deferred |= not await _take(client, w, item)
    if deferred or len(items) == _PAGE:  # more to read (or a query to answer later)
        await messages.notify(client, fr)
    _see_state(w, fr)


async def _take(client: PrefectClient, w: _Watched, item: FlowRunInput) -> bool:
    """Apply one message; False when it must wait (a query whose handler may not be
    registered yet)."""
    run, key = w.run, messages.suffix(item.key)
    message = json.loads(item.value)
    kind = message.get("kind")
    if kind == "query":
        name = message.get("name")
        if name not in run.queries and time.monotonic() < run.started + HANDLER_GRACE:
            return False
        answer = await messages.answer(run, name, message.get("args", []))
        await messages.reply(client, item.flow_run_id, key, answer)
        await messages.delete(client, item.flow_run_id, [item.key])
        return True
    if key not in w.taken:
        _apply(w, kind, message)
        w.taken.add(key)
    await messages.log(client, item.flow_run_id, key, item.value)
    await messages.delete(client, item.flow_run_id, [item.key])
    return True


def _apply(w: _Watched, kind: Any, message: dict[str, Any]) -> None:
    run = w.run
    if kind == "signal":
        run.deliver(message["name"], message["data"])
    elif kind == "answer":
        run.deliver_answer(messages.request_id(message["request"]), message["data"])
    elif kind == "decision":
        run.deliver_decision(messages.request_id(message["request"]), message["data"])
    elif kind == "claim":
        run.deliver_claim(message["name"], message["key"], int(message["index"]))
    elif kind == "cancel":
        run.request_cancel()
    elif kind == "terminate":
        run.request_terminate(f"terminated: {message.get('reason', '')}")
        w.stop()
    else:
        _log.warning("workflow %s: ignored a message of kind %r", run.workflow_id, kind)


def _see_state(w: _Watched, fr: FlowRun) -> None:
    """What the run's state says, once its inbox is read: a state forced Cancelled
    with no terminate request is a cancel (it raced the start); Cancelling is the
    UI's cancel; Running while the run waits on its pause is a resumed form."""
    run, state = w.run, fr.state
    if state is None or run.terminated is not None:
        return
    if state.type in (StateType.CANCELLED, StateType.CANCELLING):
        run.request_cancel()
    elif state.type == StateType.RUNNING and run.paused:
        run.notice_unpause()


async def _read_runs(
    client: PrefectClient,
    ids: list[str],
    *,
    tags: list[str] | None = None,
    states: list[StateType] | None = None,
) -> list[FlowRun]:
    found: list[FlowRun] = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=ids),  # type: ignore[arg-type]
            tags=FlowRunFilterTags(all_=tags) if tags else None,
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states)) if states else None,
        ),
        limit=min(len(ids), _API_LIMIT),
    )
    return found


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)]
