"""The Prefect engine: steps as task runs, flows as flow runs (``engine/prefect/`` is the
only part of the core that imports ``prefect``).

* A tracked step is a Prefect task (created once per step, kept in a weak-keyed
  map: nothing is written onto the user's step or flow): its
  :class:`~beluga_flows.RetryPolicy` becomes ``retries`` / ``retry_delay_seconds`` /
  ``retry_jitter_factor`` / ``retry_condition_fn`` (a plain function: Prefect
  silently ignores a partial or a callable object), so each retry is a visible
  task-run state. The middleware stack is split at the task run: telemetry wraps
  the task run(s) of a call, Prefect carries out the retries the policy decides
  (``retry_condition_fn`` → ``middleware.retry_decision``, which counts them), each
  attempt runs breaker → limits → timeout → call. The timeout is beluga's (Prefect's
  own is best effort); the error carries ``.attempts``.
* A ``@flow`` is an *async* Prefect flow whatever the user's function: sync bodies
  run in a worker thread, so no run pays the ~1.1 s floor of Prefect's sync engine.
* ``in_flow`` runs a chain/graph body in the current flow run, or starts one.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import random
import weakref
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from prefect import Flow as PrefectFlow
from prefect import Task as PrefectTask
from prefect import tags as prefect_tags
from prefect.artifacts import acreate_markdown_artifact
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE, CacheKeyFnPolicy
from prefect.context import FlowRunContext, TaskRunContext
from prefect.events import emit_event
from prefect.results import get_result_store
from prefect.utilities.annotations import quote

from beluga_flows.core import middleware
from beluga_flows.core.specs import FlowLike, StepLike, StepSpec
from beluga_flows.durable import live as _durable
from beluga_flows.engine.base import Engine, Sleep, input_hash
from beluga_flows.engine.prefect import attempts, health, history
from beluga_flows.engine.prefect.limits import hold
from beluga_flows.engine.prefect.tags import run_tags, step_tags
from beluga_flows.resilience.breaker import add_global_listener
from beluga_flows.resilience.retry import RetryPolicy

__all__ = ["PrefectEngine", "prefect_flow", "prefect_task"]

T = TypeVar("T")
_MAX_PREFECT_DELAYS = 50  # Prefect refuses longer retry_delay_seconds lists
# What the adapter built for each step and flow, keyed weakly by the user's object.
_TASKS: weakref.WeakKeyDictionary[StepLike, PrefectTask[..., Any]] = weakref.WeakKeyDictionary()
_LABELLED: weakref.WeakKeyDictionary[StepLike, PrefectTask[..., Any]] = weakref.WeakKeyDictionary()
_DURABLE: weakref.WeakKeyDictionary[StepLike, PrefectTask[..., Any]] = weakref.WeakKeyDictionary()
_FLOWS: weakref.WeakKeyDictionary[FlowLike, PrefectFlow[..., Any]] = weakref.WeakKeyDictionary()


def _retry_condition(policy: RetryPolicy, name: str) -> Callable[..., Awaitable[bool]]:
    # Must stay a function (``async def`` is one): Prefect calls retry_condition_fn
    # only if inspect.isfunction() is true, and silently disables retries otherwise.
    async def should_retry(task: Any, task_run: Any, state: Any) -> bool:
        err = state.data if isinstance(state.data, BaseException) else None
        if err is None:
            try:
                state.result(raise_on_failure=True)
            except BaseException as exc:
                err = exc
        # The policy decides (and the retry is counted there); Prefect carries it out.
        return await middleware.retry_decision(policy, name, err)

    return should_retry


def _retry_options(policy: RetryPolicy | None, name: str) -> dict[str, Any]:
    if policy is None or policy.max_attempts == 1:
        return {"retries": 0}
    retries = policy.max_attempts - 1
    delays = [policy.backoff(n) for n in range(1, min(retries, _MAX_PREFECT_DELAYS) + 1)]
    return {
        "retries": retries,
        "retry_delay_seconds": delays,
        "retry_jitter_factor": policy.jitter or None,
        "retry_condition_fn": _retry_condition(policy, name),
    }


def prefect_task(step: StepLike, *, labelled: bool = False) -> PrefectTask[..., Any]:
    """The Prefect task behind ``step`` (built once). Its task runs get Prefect's own
    name (``<step>-<3 hex>``); ``labelled=True``: the task whose runs are named by
    ``middleware.RUN_LABEL`` (graph nodes ``<node>-<iteration>``, workflow steps), as
    Prefect calls a ``task_run_name`` callable on every run."""
    cache = _LABELLED if labelled else _TASKS
    cached = cache.get(step)
    if cached is None:
        options = _task_options(step)
        if labelled:
            options["task_run_name"] = _labeller(step.spec.name)
        cached = cache[step] = PrefectTask(fn=_task_fn(step), **options)
    return cached


def _labeller(name: str) -> Callable[[], str]:
    def task_run_name() -> str:
        return middleware.RUN_LABEL.get() or f"{name}-{random.getrandbits(12):03x}"

    return task_run_name


def _task_fn(step: StepLike) -> Callable[..., Awaitable[Any]]:
    async def run(*args: Any, **kwargs: Any) -> Any:
        middleware.RUN_LABEL.set(None)  # a node's label is not its nested steps' label
        # Steps nested in a step are plain task runs: the outer one is what a
        # workflow replays.
        scope = _durable.NODE.get()
        if scope is not None and _durable.CURRENT.get() is scope.run:
            scope.begin_attempt()  # an attempt of the workflow's own step (not a nested one)
        outer = _durable.CURRENT.set(None)
        try:
            await attempts.before_attempt(step.spec, _ENGINE.sleep)
            return await middleware.guarded_call(_ENGINE, step, args, kwargs)
        except Exception as err:
            ctx = TaskRunContext.get()
            if ctx is not None:
                middleware.set_attempts(err, ctx.task_run.run_count)
            # The last attempt of a step with a fallback ends Completed with it.
            final = await attempts.fallback_state(step.spec, err, attempts.attempt_number())
            if final is not None:
                return final
            raise
        finally:
            _durable.CURRENT.reset(outer)

    # Parameters as the user wrote them (``__wrapped__``), but not the user's
    # module/qualname: cloudpickle would then ship ``run`` by reference to the
    # user's function (Dask workers) and fail.
    functools.update_wrapper(run, step.fn, assigned=("__name__", "__doc__"), updated=())
    return run


def _task_options(step: StepLike) -> dict[str, Any]:
    spec = step.spec
    return {
        "name": spec.name,
        "description": spec.description,
        "tags": list(spec.tags),
        # No cache: Prefect's default policy hashes every input of every call.
        "cache_policy": INPUTS + TASK_SOURCE if spec.cache else NO_CACHE,
        "persist_result": spec.cache,
        **_retry_options(spec.retry_policy, spec.name),
    }


def prefect_flow(flow: FlowLike) -> PrefectFlow[..., Any]:
    """The async Prefect flow behind ``flow`` (built once)."""
    pf = _FLOWS.get(flow)
    if pf is not None:
        return pf
    spec = flow.spec

    async def body(*args: Any, **kwargs: Any) -> Any:
        with step_tags():
            return await middleware.run_flow_body(flow, args, kwargs)

    functools.update_wrapper(body, flow.fn)
    pf = PrefectFlow(
        fn=body,
        name=spec.name,
        description=spec.description,
        retries=spec.retries,
        task_runner=spec.task_runner,
        # Prefect renames a run with a custom name after creating it: a sync client,
        # a blocking storage read and a PATCH per run. Opt-in (@flow(run_name=...)).
        flow_run_name=spec.run_name,
    )
    _FLOWS[flow] = pf
    return pf


# The durable key of the step call being started (read by its task's cache policy).
_STEP_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "beluga_step_key", default=None
)


def _durable_key(context: Any, parameters: dict[str, Any]) -> str | None:
    return _STEP_KEY.get()


def _durable_task(step: StepLike) -> PrefectTask[..., Any]:
    """``step``'s task inside a workflow: it returns a :class:`~beluga_flows.durable.
    live.Recorded` (the value and the undos its code registered), persisted under the
    workflow's durable key."""
    cached = _DURABLE.get(step)
    if cached is None:
        run = _task_fn(step)

        async def recorded(*args: Any, **kwargs: Any) -> Any:  # a Recorded (or its state)
            value = await run(*args, **kwargs)
            scope = _durable.NODE.get()
            undos = tuple(scope.undos) if scope is not None else ()
            return attempts.mapped(value, lambda v: _durable.Recorded(v, undos))

        functools.update_wrapper(recorded, step.fn, assigned=("__name__", "__doc__"), updated=())
        options = _task_options(step) | {
            "task_run_name": _labeller(step.spec.name),
            "cache_policy": CacheKeyFnPolicy(cache_key_fn=_durable_key),
            "persist_result": True,
        }
        cached = _DURABLE[step] = PrefectTask(fn=recorded, **options)
    return cached


async def _durable_step(
    run: _durable.LiveRun, step: StepLike, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """A step call inside a workflow: a task run named by its label whose result is
    stored under its durable key; a replay finds it there instead of running it."""
    label, key = run.step_identity(step.spec.name, input_hash(args, kwargs))
    task = _durable_task(step) if key is not None else prefect_task(step, labelled=True)
    if run.rollback is not None and (key is None or not await stored(task, key)):
        raise _durable.RollbackStop(f"step {label!r}")  # rolling back: nothing new runs
    scope = _durable.NodeScope.of(run, step.spec.name, label, key)
    tokens = middleware.RUN_LABEL.set(label), _STEP_KEY.set(key), _durable.NODE.set(scope)
    try:
        quoted = {k: quote(v) for k, v in kwargs.items()}
        result = await attempts.unwrap(await task(*(quote(a) for a in args), **quoted))
    except BaseException:
        # Its work so far happened: undone if the run compensates, even after a retry.
        # (Keyed apart from the undos a later, successful execution stores.)
        failed = f"{scope.identity}!{run.attempt}"
        run.kept += [(label, failed, undo) for undo in scope.undos]
        raise
    finally:
        middleware.RUN_LABEL.reset(tokens[0])
        _STEP_KEY.reset(tokens[1])
        _durable.NODE.reset(tokens[2])
        for wait in scope.waits:  # a wait its (sync, abandoned) code left behind
            wait.cancel()
    if isinstance(result, _durable.Recorded):  # found stored, or just run
        result, undos = result.value, result.undos
    else:
        undos = tuple(scope.undos)
    run.compensations += [(label, scope.identity, undo) for undo in undos]
    run.last_step = label
    return result


async def stored(task: PrefectTask[..., Any], key: str) -> bool:
    """Whether ``task`` completed under durable ``key`` (its result is in its store)."""
    store = await get_result_store().aupdate_for_task(task)
    return bool(await store.aexists(key))


# The body of an ad-hoc flow run travels in the context, not as a parameter, so the
# UI shows only the real input.
_BODY: contextvars.ContextVar[Callable[[Any], Awaitable[Any]]] = contextvars.ContextVar(
    "beluga_flow_body"
)
# True inside a run started with a task runner: steps are submitted to it.
_SUBMIT: contextvars.ContextVar[bool] = contextvars.ContextVar("beluga_submit", default=False)


async def _run_body(input: Any) -> Any:
    with step_tags():
        return await _BODY.get()(input)


@functools.cache
def _adhoc_flow(name: str, description: str | None) -> PrefectFlow[..., Any]:
    # ``run`` reaches the ContextVar through a module-level function: Prefect ships
    # the flow to task-runner processes, and a ContextVar does not pickle.
    async def run(input: Any) -> Any:
        return await _run_body(input)

    return PrefectFlow(fn=run, name=name, description=description, validate_parameters=False)


def _emit_breaker_event(breaker: Any, old: Any, new: Any) -> None:
    """Each breaker state change is a Prefect event (``beluga.breaker.opened`` …)."""
    verb = {"open": "opened", "half_open": "half_opened", "closed": "closed"}[str(new)]
    emit_event(
        event=f"beluga.breaker.{verb}",
        resource={
            "prefect.resource.id": f"beluga.breaker.{breaker.name}",
            "prefect.resource.name": breaker.name,
        },
        payload={"from": str(old), "to": str(new)},
    )


add_global_listener(_emit_breaker_event)


class PrefectEngine(Engine):
    """Runs steps as Prefect task runs and flows as Prefect flow runs."""

    name = "prefect"
    sleep: Sleep = staticmethod(asyncio.sleep)
    rng: random.Random | None = None

    async def run_step(self, step: StepLike, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        run = _durable.CURRENT.get()
        if run is not None:
            run.checkpoint()  # a workflow's step boundary: cancel / terminate land here
        if not step.spec.track:
            if run is not None:  # an inline step keeps no record: a roll-back stops here
                run.stop_if_rolling_back(f"inline step {step.spec.name!r}")
            return await middleware.run_inline(self, step, args, kwargs)
        # The telemetry layer around the task run(s), whose attempts run the rest.
        return await middleware.observed(
            self, step.spec.name, lambda: self._task_run(run, step, args, kwargs)
        )

    async def _task_run(self, run: Any, step: StepLike, args: Any, kwargs: dict[str, Any]) -> Any:
        task = prefect_task(step, labelled=middleware.RUN_LABEL.get() is not None)
        tagged = prefect_tags(*step.spec.tags) if step.spec.tags else contextlib.nullcontext()
        async with middleware.flow_slot():
            with tagged:
                if run is not None and not _SUBMIT.get():
                    return await _durable_step(run, step, args, kwargs)
                if _SUBMIT.get():  # (task runners do not unwrap quote())
                    future = task.submit(*args, **kwargs)
                    return await asyncio.to_thread(future.result)
                # quote(): Prefect otherwise walks every argument, twice per task run,
                # looking for futures; a graph's whole state is every node's argument.
                quoted = {k: quote(v) for k, v in kwargs.items()}
                return await attempts.unwrap(await task(*(quote(a) for a in args), **quoted))

    async def run_flow(self, flow: FlowLike, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with run_tags("beluga:flow", *flow.spec.tags):
            return await prefect_flow(flow)(*args, **kwargs)

    def to_prefect(self, flow: FlowLike) -> PrefectFlow[..., Any]:
        """The Prefect flow behind ``flow``: what ``Flow.to_prefect()`` returns."""
        return prefect_flow(flow)

    async def in_flow(
        self,
        name: str,
        body: Callable[[Any], Awaitable[T]],
        input: Any,
        *,
        description: str | None = None,
        task_runner: Any = None,
        tags: tuple[str, ...] = (),
    ) -> T:
        if task_runner is None and FlowRunContext.get() is not None:
            return await body(input)
        pf = _adhoc_flow(name, description)
        if task_runner is not None:
            # Steps go to the runner (Dask …) through Task.submit, in a (sub-)flow run
            # whose task runner it is.
            pf = pf.with_options(task_runner=task_runner)
        token, submit = _BODY.set(body), _SUBMIT.set(task_runner is not None)
        try:
            with run_tags(*tags):
                result = pf(input=input)
                assert inspect.isawaitable(result)
                return await result  # type: ignore[no-any-return]
        finally:
            _BODY.reset(token)
            _SUBMIT.reset(submit)

    async def publish_markdown(self, key: str, markdown: str, description: str) -> None:
        if FlowRunContext.get() is not None:
            await acreate_markdown_artifact(markdown=markdown, key=key, description=description)

    def limits(self, spec: StepSpec) -> AbstractAsyncContextManager[None]:
        return hold(spec)  # Prefect's global concurrency and rate limits

    # What a workflow definition's monitor asks of the engine (engine/prefect/history.py).
    recent_durations = staticmethod(history.recent_durations)
    emit_event = staticmethod(history.emit)
    # What an orchestrator's health check asks (engine/prefect/health.py).
    api_url = staticmethod(health.api_url)
    api_headers = staticmethod(health.api_headers)

    def run_id(self) -> str | None:
        ctx = FlowRunContext.get()
        return str(ctx.flow_run.id) if ctx is not None and ctx.flow_run is not None else None

    def __repr__(self) -> str:
        return "PrefectEngine()"


_ENGINE = PrefectEngine()
