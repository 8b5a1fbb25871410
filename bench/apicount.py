"""Count the Prefect API requests and events this process makes.

``ApiCount`` patches the two places every client-side report to the Prefect API
passes through, for as long as it is entered:

* **requests**: ``PrefectHttpxAsyncClient.send`` / ``PrefectHttpxSyncClient.send``
  (every ``PrefectClient`` / ``SyncPrefectClient`` request, from any thread: the
  engines', the log worker's, the events worker's HTTP fallback). Counted as
  ``"POST /task_runs/{id}/set_state"`` (ids replaced by ``{id}``).
* **events**: ``EventsWorker.send`` (every ``emit_event``: task-run state changes,
  which is how Prefect 3 reports task runs, flow-run events, custom events),
  counted by event name. Events travel on the events websocket, not on HTTP.
* **log records** sent to the API: ``APILogWorker.send``, by logger name. The worker
  ships them in batches (``POST /logs/``) whose number depends on timing, so
  :attr:`ApiCount.stable_requests` leaves those batches out.

Buffered logs and events are sent later by their workers: :meth:`ApiCount.drain`
flushes both before the counts are read. Used by ``bench/tracked.py`` and by the
regression guard ``tests/test_tracked_cost.py``::

    with ApiCount() as count:
        await my_flow()
        count.drain()
    print(count.requests, count.events)
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from typing import Any

_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


LOG_BATCH = "POST /logs/"


def request_key(method: str, path: str) -> str:
    """``"POST /task_runs/{id}/set_state"`` for a request (the API prefix dropped)."""
    path = path.split("/api", 1)[-1] if "/api/" in path else path
    return f"{method} {_ID.sub('{id}', path)}"


class ApiCount:
    """Counts Prefect API requests (by method and path) and events (by name)."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.logs: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._undo: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> ApiCount:
        from prefect.client.base import PrefectHttpxAsyncClient, PrefectHttpxSyncClient
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        count = self

        def async_send(original: Any) -> Any:
            async def send(client: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
                count._request(request)
                return await original(client, request, *args, **kwargs)

            return send

        def sync_send(original: Any) -> Any:
            def send(client: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
                count._request(request)
                return original(client, request, *args, **kwargs)

            return send

        def event_send(original: Any) -> Any:
            def send(worker: Any, event: Any) -> Any:
                with count._lock:
                    count.events[event.event] += 1
                return original(worker, event)

            return send

        def log_send(original: Any) -> Any:
            def send(worker: Any, log: Any) -> Any:
                with count._lock:
                    count.logs[str(log.get("name"))] += 1
                return original(worker, log)

            return send

        for cls, name, wrap in (
            (PrefectHttpxAsyncClient, "send", async_send),
            (PrefectHttpxSyncClient, "send", sync_send),
            (EventsWorker, "send", event_send),
            (APILogWorker, "send", log_send),
        ):
            original = cls.__dict__.get(name)
            self._undo.append((cls, name, original))
            setattr(cls, name, wrap(getattr(cls, name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for cls, name, original in reversed(self._undo):
            if original is None:
                delattr(cls, name)
            else:
                setattr(cls, name, original)
        self._undo.clear()

    def _request(self, request: Any) -> None:
        with self._lock:
            self.requests[request_key(request.method, request.url.path)] += 1

    @staticmethod
    def drain(timeout: float = 10) -> None:
        """Send the logs and events Prefect's workers still buffer."""
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=timeout)
        EventsWorker.drain_all(timeout=timeout)

    @property
    def stable_requests(self) -> Counter[str]:
        """The requests without the log worker's batches (``POST /logs/``)."""
        with self._lock:
            return Counter({k: n for k, n in self.requests.items() if k != LOG_BATCH})

    def reset(self) -> None:
        """Forget what was counted so far."""
        with self._lock:
            self.requests.clear()
            self.events.clear()
            self.logs.clear()

    def totals(self) -> tuple[int, int, int]:
        """(requests without log batches, events, log records) counted so far."""
        return (
            sum(self.stable_requests.values()),
            sum(self.events.values()),
            sum(self.logs.values()),
        )
