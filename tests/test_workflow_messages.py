"""Workflow messages at volume (issue 11, defect 11): a resumed run inherits every
message, however many (the old copy stopped silently at 10,000), and a run's inbox
holds only what it has not taken in yet (the old watcher sent every key it had
seen with every poll, past ~32k more than the database takes in one query)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import FlowRunCreate
from prefect.client.schemas.objects import FlowRun

from beluga_flows.engine.prefect import messages
from tests.procs import until
from tests.workflow_app import lines, signals

pytestmark = pytest.mark.usefixtures("prefect_server")
MANY = 10_050


async def _flow_run(client: object, name: str) -> FlowRun:
    from prefect import flow

    @flow(name="messages-bench")
    def noop() -> None: ...

    flow_id = await client.create_flow(noop)  # type: ignore[attr-defined]
    made = await client.request(  # type: ignore[attr-defined]
        "POST",
        "/flow_runs/",
        json=FlowRunCreate(flow_id=flow_id, name=name).model_dump(mode="json"),
    )
    return FlowRun.model_validate(made.json())


@pytest.mark.slow
def test_a_resume_inherits_more_than_ten_thousand_messages_in_order() -> None:
    async def scenario() -> tuple[int, list[str]]:
        async with get_client() as client:
            source, target = await _flow_run(client, "old"), await _flow_run(client, "new")
            sem = asyncio.Semaphore(16)

            async def put(i: int) -> None:
                body = json.dumps({"kind": "signal", "name": "item", "data": i})
                async with sem:
                    await client.create_flow_run_input(
                        source.id, f"{messages.LOG}{i:020d}-{uuid.uuid4().hex[:8]}", body
                    )

            await asyncio.gather(*(put(i) for i in range(MANY)))
            copied = await messages.copy_history(client, source, target)
            inbox = await messages.read_all(client, target.id, messages.INBOX)
            return copied, [json.loads(i.value)["data"] for i in inbox]

    copied, data = asyncio.run(scenario())
    assert copied == MANY
    assert data == list(range(MANY))  # every one, in the order they were sent


def test_messages_taken_in_leave_the_inbox_for_the_log(tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger.txt")
    wid = f"inbox-{uuid.uuid4().hex[:8]}"
    handle = signals.execute({"ledger": ledger, "expect": 3}, workflow_id=wid)
    for item in range(3):
        signals.signal(wid, None, "item", item)
    assert signals.get_result(wid, timeout=60) == {"items": [0, 1, 2]}

    async def read() -> tuple[int, int]:
        async with get_client() as client:
            run_id = uuid.UUID(handle.run_id)
            inbox = await messages.read_all(client, run_id, messages.INBOX)
            log = await messages.read_all(client, run_id, messages.LOG)
            return len(inbox), len(log)

    waiting, taken = until(lambda: (r := asyncio.run(read())) and r[1] >= 3 and r, 30, "logs")
    assert waiting == 0 and taken == 3  # nothing left to read (and nothing to exclude)
    assert lines(ledger)[-1] == "do last"


def test_a_run_added_while_the_watcher_winds_down_is_still_watched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watcher's loop ends when its last run ends; closing its API client takes an
    ``await``. A run added meanwhile must not be left unwatched (its signals lost)."""
    from beluga_flows.durable.live import LiveRun
    from beluga_flows.engine.prefect import watch

    opened, closing, added = asyncio.Event(), asyncio.Event(), asyncio.Event()
    real = watch.get_client

    class SlowToClose:  # the real client; its close waits until a run was added
        async def __aenter__(self) -> object:
            self.inner = real()
            entered = await self.inner.__aenter__()
            opened.set()
            return entered

        async def __aexit__(self, *exc: object) -> None:
            closing.set()
            await added.wait()
            await self.inner.__aexit__(*exc)

    async def scenario() -> object:
        monkeypatch.setattr(watch, "get_client", SlowToClose)
        async with get_client() as client:
            first, second = await _flow_run(client, "first"), await _flow_run(client, "second")
            one = LiveRun("wf-one", str(first.id), "x")
            two = LiveRun("wf-two", str(second.id), "y")
            watch.watch(one, lambda: None)
            await asyncio.wait_for(opened.wait(), 30)
            watch.unwatch(one)  # the last run ended: the loop winds down
            await asyncio.wait_for(closing.wait(), 30)
            watch.watch(two, lambda: None)
            added.set()
            await messages.send(client, second, "signal", {"name": "go", "data": 7})
            return await asyncio.wait_for(two.next_signal("go", None), 30)

    assert asyncio.run(scenario()) == 7
