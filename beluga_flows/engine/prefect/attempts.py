"""What a step's task run does around an attempt beyond the middleware stack: the
provider's cooldown before a retry, and the fallback after the last attempt. Part
of the Prefect adapter.

On Prefect the retry loop is Prefect's, so the fallback layer of
:mod:`beluga_flows.core.middleware` cannot wrap it from outside: the task run knows
when an attempt is the last (its ``run_count`` has reached the policy's
``max_attempts``, or the policy does not retry the error), and then returns a
``Completed`` state carrying the fallback with the message ``failed: <error>;
returned the fallback``. Prefect uses a returned state as the run's final state
(``prefect.states.return_value_to_state``), so the UI shows the earlier attempts as
*Retrying* and the last as *Completed* with that message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect.cache_policies import CacheKeyFnPolicy
from prefect.client.schemas.objects import State
from prefect.context import TaskRunContext
from prefect.states import Completed
from prefect.transactions import get_transaction

from beluga_flows.core import middleware
from beluga_flows.core.specs import StepSpec
from beluga_flows.resilience import fallback, providers
from beluga_flows.resilience.retry import RetryPolicy

__all__ = ["attempt_number", "before_attempt", "fallback_state", "mapped", "unwrap"]


def attempt_number() -> int:
    """This task run's attempt (1 for the first; 1 outside a task run)."""
    ctx = TaskRunContext.get()
    return ctx.task_run.run_count if ctx is not None else 1


async def before_attempt(spec: StepSpec, sleep: Callable[[float], Any]) -> None:
    """A retry of a step of a provider first pauses its ``cooldown_on_retry``
    (after Prefect's backoff: the two add up, as on the local engine)."""
    if spec.provider is not None and attempt_number() > 1:
        pause = providers.cooldown(spec.provider)
        if pause:
            await sleep(pause)


async def _last(policy: RetryPolicy | None, attempt: int, err: BaseException) -> bool:
    """Whether Prefect will not retry ``err`` after ``attempt`` (the same answer as
    the adapter's ``retry_condition_fn``, which then finds nothing left to wait for)."""
    if policy is None or attempt >= policy.max_attempts or not policy.should_retry(err):
        return True
    return not await middleware.may_retry(err)


async def fallback_state(spec: StepSpec, err: BaseException, attempt: int) -> State[Any] | None:
    """The final state of a task run whose attempt ``attempt`` failed with ``err``:
    ``Completed`` with the fallback if this was the last attempt and the step has
    one, else ``None`` (the error stands: Prefect retries it or fails the run)."""
    if spec.fallback is None or not fallback.replaces(err):
        return None
    if not await _last(spec.retry_policy, attempt, err):
        return None
    value = await fallback.fall_back(spec.name, spec.fallback, err)
    _not_cached()
    return Completed(data=value, message=fallback.message(err))


def _not_cached() -> None:
    """A fallback is no result to reuse for the same inputs: a ``cache=True`` step's
    task run does not write it to its cache. (A workflow step's record, kept under
    its durable key, does keep it: a replay sees what the run saw.)"""
    ctx, txn = TaskRunContext.get(), get_transaction()
    if ctx is None or txn is None or isinstance(ctx.task.cache_policy, CacheKeyFnPolicy):
        return
    txn.write_on_commit = False


def mapped(result: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn(result)``, or, for a fallback state, that state with ``fn`` of its data."""
    if isinstance(result, State):
        result.data = fn(result.data)
        return result
    return fn(result)


async def unwrap(result: Any) -> Any:
    """What a task call returned: its value (a fallback state's data)."""
    if isinstance(result, State) and result.is_completed():
        return await result.aresult()
    return result
