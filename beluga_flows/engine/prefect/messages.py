"""Messages to and from a live workflow run on Prefect. Part of the Prefect adapter.

Messages are flow-run inputs (the storage behind Prefect's ``send_input``), in two
places per run:

* the **inbox** (``beluga-inbox-<time>-<rand>``): what senders leave for the run —
  signals, approval answers, cancel and terminate requests, custom queries. A
  sender then tags the run ``beluga:mail``; the process's watcher finds every
  tagged run of its own in one query, takes the tag off, reads those inboxes oldest
  first and empties them. An inbox holds only what has not been read yet, so a
  read is one small query however long the run lives (no growing exclude list);
* the **log** (``beluga-log-<same suffix>``): every message the run took in (and
  the approval decisions it took), kept for ``resume``: a new run of the same
  execution starts with its predecessor's log copied into its inbox, so it
  replays the same signals and decisions in the same order.

Keys sort by send time (lowercase, digits, dashes, as Prefect requires). Query
answers come back as ``bfreply-<suffix>``. When a run ends it records the answers of
its query handlers (``beluga-final-queries``) so they can still be asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, FlowRunInput, StateType

from beluga_flows.core import middleware
from beluga_flows.durable.live import LiveRun, StepStatus
from beluga_flows.engine.prefect import runs
from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = [
    "INBOX",
    "LOG",
    "MAIL",
    "answer",
    "ask",
    "copy_history",
    "encode",
    "final_answer",
    "log",
    "message_key",
    "notify",
    "read_all",
    "request_id",
    "record_final_queries",
    "reply",
    "send",
    "step_statuses",
]

INBOX = "beluga-inbox-"
LOG = "beluga-log-"
REPLY = "bfreply-"
FINAL = "beluga-final-queries"
MAIL = "beluga:mail"
_PAGE = 1000
# What a resumed run inherits: what changes its course (a terminate ended the old run
# only; queries are answered by the run they were asked of).
_INHERITED = {"signal", "answer", "decision", "claim", "cancel"}


def message_key(prefix: str) -> str:
    """A flow-run input key that sorts by send time."""
    return f"{prefix}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


def request_id(value: Any) -> int | str:
    """An approval request as messages and labels carry it: ``n`` for the workflow
    body's own requests, ``"<step label>/<n>"`` for a step's."""
    if isinstance(value, str) and "/" in value:
        return value
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return 1


def suffix(key: str) -> str:
    """The ``<time>-<rand>`` part a message keeps in the inbox, the log and a reply."""
    return "-".join(key.rsplit("-", 2)[-2:])


@contextlib.contextmanager
def _unless(status: int) -> Iterator[None]:
    """Ignore the API answering ``status`` (409: the input exists; 404: it is gone)."""
    try:
        yield
    except httpx.HTTPStatusError as err:
        if err.response.status_code != status:
            raise


def encode(op: str, value: Any) -> str:
    """JSON for the API; anything else is ``INVALID_INPUT``."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as err:
        raise OrchestratorError(
            op, f"data must be JSON-serialisable: {err}", ErrorCode.INVALID_INPUT
        ) from err


# ---------------------------------------------------------------- sending


async def notify(client: PrefectClient, run: FlowRun) -> None:
    """Tag ``run`` as having mail. Always written, even when the tag was seen: the
    watcher may have just taken it off (it reads the inbox only after that)."""
    tags = [t for t in run.tags or [] if t != MAIL]
    await client.update_flow_run(run.id, tags=[*tags, MAIL])


async def send(client: PrefectClient, run: FlowRun, kind: str, payload: dict[str, Any]) -> str:
    """Leave a message in the run's inbox; its watcher takes it within a poll."""
    key = message_key(INBOX)
    body = encode(kind, {"kind": kind, **payload})
    await client.create_flow_run_input(run.id, key, body, sender="beluga_flows")
    await notify(client, run)
    return key


async def log(client: PrefectClient, run_id: Any, key_suffix: str, value: str) -> None:
    """Keep a message in the run's log (once: a second write of it changes nothing)."""
    with _unless(409):
        await client.create_flow_run_input(run_id, LOG + key_suffix, value, sender="beluga_flows")


async def read_all(
    client: PrefectClient, run_id: Any, prefix: str, _digits: int = 0
) -> list[FlowRunInput]:
    """Every input under ``prefix``, in key order, however many there are: a full
    page is read again as ten narrower prefixes (the keys' 20 time digits)."""
    found = await client.filter_flow_run_input(run_id, prefix, _PAGE, set())
    if len(found) < _PAGE or _digits >= 20:
        return sorted(found, key=lambda i: i.key)
    parts = [await read_all(client, run_id, prefix + d, _digits + 1) for d in "0123456789"]
    return [item for part in parts for item in part]


async def delete(client: PrefectClient, run_id: Any, keys: Iterable[str]) -> None:
    """Remove inputs (already gone is fine)."""
    for key in keys:
        with _unless(404):
            await client.delete_flow_run_input(run_id, key)


async def copy_history(client: PrefectClient, source: FlowRun, target: FlowRun) -> int:
    """Give a resumed run what its predecessor took in (its log) and what was still
    waiting for it (its inbox): same suffixes, same order. Returns how many."""
    taken = await read_all(client, source.id, LOG)
    waiting = await read_all(client, source.id, INBOX)
    copied = 0
    for item in sorted([*taken, *waiting], key=lambda i: suffix(i.key)):
        if json.loads(item.value).get("kind") not in _INHERITED:
            continue
        with _unless(409):  # logged and still in the inbox: one copy
            await client.create_flow_run_input(
                target.id, INBOX + suffix(item.key), item.value, sender=item.sender
            )
            copied += 1
    return copied


# ---------------------------------------------------------------- queries


async def ask(
    client: PrefectClient, run: FlowRun, name: str, args: list[Any], timeout: float
) -> Any:
    """A custom query answered by the live run (``TIMEOUT`` if it does not answer)."""
    key = await send(client, run, "query", {"name": name, "args": args})
    reply_key = REPLY + suffix(key)
    deadline = time.monotonic() + timeout
    while True:
        found = await client.filter_flow_run_input(run.id, reply_key, 1, set())
        if found:
            await delete(client, run.id, [reply_key])
            return _unwrap(json.loads(found[0].value))
        if time.monotonic() > deadline:
            current = await client.read_flow_run(run.id)
            if not runs.is_live(current):
                return await final_answer(client, current, name, args)
            raise OrchestratorError(
                "query",
                f"run {run.id} did not answer {name!r} within {timeout:g}s",
                ErrorCode.TIMEOUT,
            )
        await asyncio.sleep(min(runs.POLL, 0.2))


async def reply(client: PrefectClient, run_id: Any, key_suffix: str, body: str) -> None:
    """Leave the answer to the query ``key_suffix`` (once: a query read again after its
    removal failed is answered by the reply already there)."""
    with _unless(409):
        await client.create_flow_run_input(run_id, REPLY + key_suffix, body)


def _unwrap(answered: dict[str, Any]) -> Any:
    if "error" in answered:
        err = answered["error"]
        raise OrchestratorError("query", err["message"], ErrorCode(err["code"]))
    return answered["ok"]


async def answer(run: LiveRun, name: str, args: list[Any]) -> str:
    """The live run's reply to a custom query (JSON, ``ok`` or ``error``)."""
    handler = run.queries.get(name)
    if handler is None:
        return json.dumps({"error": _unknown(name, run.queries)})
    try:
        value = await middleware.call(handler, tuple(args), {})
        return json.dumps({"ok": value}, default=str)
    except Exception as exc:
        code = exc.code.value if isinstance(exc, OrchestratorError) else "execution_failed"
        return json.dumps({"error": {"code": code, "message": f"query {name!r} failed: {exc}"}})


def _unknown(name: str, known: Iterable[str]) -> dict[str, str]:
    names = ", ".join(sorted(["status", "result", "steps", *known]))
    return {"code": "invalid_input", "message": f"unknown query {name!r}; known: {names}"}


async def record_final_queries(client: PrefectClient, run: LiveRun) -> None:
    """At the end of a run: each query handler's last answer (asked with no
    arguments), so a finished run still answers them."""
    answers = {name: json.loads(await answer(run, name, [])) for name in run.queries}
    with _unless(409):
        await client.create_flow_run_input(
            run.run_id,  # type: ignore[arg-type]
            FINAL,
            json.dumps(answers),
            sender="beluga_flows",
        )


async def final_answer(client: PrefectClient, run: FlowRun, name: str, args: list[Any]) -> Any:
    """A custom query of a finished run: the answer it recorded as it ended.
    ``INVALID_INPUT`` for a name it had no handler for; ``INVALID_STATE`` when it
    ended without recording (it crashed) or when asked with arguments."""
    found = await client.filter_flow_run_input(run.id, FINAL, 1, set())
    if not found:
        raise OrchestratorError(
            "query",
            f"custom query {name!r} needs a live run; run {run.id} is "
            f"{runs.state_name(run)} and recorded no answers",
            ErrorCode.INVALID_STATE,
        )
    recorded: dict[str, Any] = json.loads(found[0].value)
    if name not in recorded:
        unknown = _unknown(name, recorded)
        raise OrchestratorError("query", unknown["message"], ErrorCode.INVALID_INPUT)
    if args:
        raise OrchestratorError(
            "query",
            f"run {run.id} is {runs.state_name(run)}: it kept the answer of {name!r} "
            "with no arguments only",
            ErrorCode.INVALID_STATE,
        )
    return _unwrap(recorded[name])


# ---------------------------------------------------------------- the steps query


_STEP_STATES = {
    StateType.COMPLETED: StepStatus.COMPLETED,
    StateType.FAILED: StepStatus.FAILED,
    StateType.CRASHED: StepStatus.FAILED,
    StateType.RUNNING: StepStatus.RUNNING,
    StateType.PENDING: StepStatus.PENDING,
    StateType.SCHEDULED: StepStatus.PENDING,
    StateType.PAUSED: StepStatus.WAITING,
    StateType.CANCELLED: StepStatus.SKIPPED,
    StateType.CANCELLING: StepStatus.RUNNING,
}


async def step_statuses(client: PrefectClient, run: FlowRun) -> dict[str, StepStatus]:
    """``{task-run name: StepStatus}`` for the run's steps, in start order."""
    task_runs = await client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])), limit=200
    )
    task_runs = sorted(task_runs, key=lambda t: t.expected_start_time or t.created or 0)
    statuses: dict[str, StepStatus] = {}
    for tr in task_runs:
        state = tr.state
        if state is None:
            statuses[tr.name] = StepStatus.PENDING
        elif state.name in ("Retrying", "AwaitingRetry"):
            statuses[tr.name] = StepStatus.RETRYING
        else:
            statuses[tr.name] = _STEP_STATES.get(state.type, StepStatus.PENDING)
    return statuses
