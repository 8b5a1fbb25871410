"""Hedged calls: race a secondary against a slow or failing primary (a port of
Beluga's ``resilience.Hedge``).

Example::

    fast_answer = bf.hedge(ask_gpt, ask_claude, delay=2.0)
    fast_answer.invoke("summarise this")

The primary starts at once; the secondary starts when ``delay`` has passed on the
engine's clock (``engine.sleep``: a test injects a fake one) or as soon as the
primary fails, whichever comes first. The first success wins and the other call is
cancelled (an async call is cancelled at its next ``await``, a task run on Prefect
with it; a sync function cannot be stopped in its thread: it runs on and its result
is dropped). Both failing → the primary's error (Beluga returns whichever failed
first; the primary's is the one a caller without a hedge would have seen).
Each call is a step (a task run named ``<name>-primary`` / ``<name>-secondary``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from beluga_flows._validate import seconds
from beluga_flows.core import middleware
from beluga_flows.engine import Engine
from beluga_flows.graph.agents import AgentPattern, Invocation

__all__ = ["hedge"]


class _Hedge(AgentPattern):
    kind = "hedge"
    renames = False  # each call keeps its own name: the two may be the same function

    def __init__(self, primary: Any, secondary: Any, delay: float, name: str | None, provider: Any):
        super().__init__({"primary": primary, "secondary": secondary}, name=name, provider=provider)
        self.delay = delay
        self.labels = {
            role: f"{getattr(member, 'name', role)}-{role}" for role, member in self.agents.items()
        }

    def _start(self, run: Invocation, role: str, value: Any) -> asyncio.Task[Any]:
        async def one() -> Any:
            token = middleware.RUN_LABEL.set(self.labels[role])
            try:
                run.path.append(role)
                return await middleware.run_member(
                    run.engine,
                    self.agents[role],
                    value,
                    "agent.call",
                    {"pattern": self.kind, "pattern.name": self.name, "step.name": role},
                )
            finally:
                middleware.RUN_LABEL.reset(token)

        return asyncio.ensure_future(one())

    async def _run(self, run: Invocation, value: Any) -> Any:
        primary = self._start(run, "primary", value)
        timer = asyncio.ensure_future(run.engine.sleep(self.delay))
        racing: set[asyncio.Future[Any]] = {primary}
        try:
            await asyncio.wait({primary, timer}, return_when=asyncio.FIRST_COMPLETED)
            if primary.done() and primary.exception() is None:
                return primary.result()
            racing.add(self._start(run, "secondary", value))
            while True:
                done, _ = await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
                for call in done:
                    if call.exception() is None:
                        return call.result()
                if all(call.done() for call in racing):
                    primary.result()  # raises the primary's error
        finally:
            for pending in (timer, *racing):
                pending.cancel()
            # On return the loser has finished cancelling (its ``finally`` ran).
            await asyncio.gather(timer, *racing, return_exceptions=True)


def hedge(
    primary: Any,
    secondary: Any,
    delay: Any,
    *,
    name: str | None = None,
    provider: str | Engine | None = None,
) -> AgentPattern:
    """A Runnable that races ``secondary`` against ``primary`` (see the module docs).

    ``delay`` is seconds (``float``/``int``, ``0`` allowed) or a ``timedelta``.

    Example::

        answer = bf.hedge(fetch_from_replica_a, fetch_from_replica_b, delay=0.2)
        answer.invoke("key")
    """
    wait = seconds("hedge", "delay", delay, allow_zero=True, allow_none=False)
    assert wait is not None
    return _Hedge(primary, secondary, wait, name, provider)
