"""Bad input at decoration/construction time: a clear INVALID_CONFIG, nothing run."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

import beluga_flows as bf
from beluga_flows import ErrorCode, OrchestratorError


def code_of(fn: Any) -> ErrorCode:
    with pytest.raises(OrchestratorError) as info:
        fn()
    return info.value.code


def test_bare_and_configured_steps() -> None:
    def fetch(url: str) -> str:
        """Fetch a page."""
        return url

    bare = bf.step(fetch)
    assert isinstance(bare, bf.Step) and isinstance(bare, bf.Runnable)
    assert bare.fn is fetch and bare.name == "fetch" and bare.__doc__ == "Fetch a page."
    assert bare.spec.retry_policy is None and bare.spec.track is True
    named = bf.step(name="get", timeout=dt.timedelta(seconds=2), retries=2, tags="io")(fetch)
    assert named.name == "get" and named.spec.timeout == 2.0 and named.spec.tags == ("io",)
    assert named.spec.retry_policy == bf.RetryPolicy(max_attempts=3)


@pytest.mark.parametrize(
    "options",
    [
        {"retries": -1},
        {"retries": 1.5},
        {"timeout": 0},
        {"timeout": -2},
        {"timeout": "1s"},
        {"timeout": dt.timedelta(days=2)},
        {"retry_policy": {"max_attempts": 3}},
        {"retries": 2, "retry_policy": bf.RetryPolicy()},
        {"circuit_breaker": object()},
        {"max_concurrency": 2},
        {"concurrency": "db", "max_concurrency": 0},
        {"concurrency": " "},
        {"rate_limit": 3},
        {"name": ""},
        {"tags": [1]},
        {"track": "yes"},
        {"cache": 1},
    ],
)
def test_invalid_step_options(options: dict[str, Any]) -> None:
    assert code_of(lambda: bf.step(**options)(lambda: None)) is ErrorCode.INVALID_CONFIG


@pytest.mark.parametrize(
    "options",
    [
        {"retries": -1},
        {"retries": 21},
        {"timeout": 0},
        {"max_workers": 0},
        {"max_workers": 5000},
        {"task_runner": "dask"},
        {"name": 3},
    ],
)
def test_invalid_flow_options(options: dict[str, Any]) -> None:
    assert code_of(lambda: bf.flow(**options)(lambda: None)) is ErrorCode.INVALID_CONFIG


def test_non_callables_are_rejected() -> None:
    assert code_of(lambda: bf.step(42)) is ErrorCode.INVALID_CONFIG  # type: ignore[call-overload]
    assert code_of(lambda: bf.flow("pipeline")) is ErrorCode.INVALID_CONFIG  # type: ignore[call-overload]
    assert code_of(lambda: bf.Chain([len, "not a step"])) is ErrorCode.INVALID_CONFIG
    assert code_of(lambda: bf.Chain("abc")) is ErrorCode.INVALID_CONFIG


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": 0},
        {"retries": -1},
        {"input_keys": ()},
        {"output_keys": [""]},
        {"memory": "buffer"},
        {"name": ""},
    ],
)
def test_invalid_chain_options(options: dict[str, Any]) -> None:
    assert code_of(lambda: bf.Chain([len], **options)) is ErrorCode.INVALID_CONFIG


def test_unknown_provider_lists_the_known_ones() -> None:
    with pytest.raises(OrchestratorError) as info:
        bf.Chain([len], provider="temporal")
    assert info.value.code is ErrorCode.NOT_FOUND
    assert "local" in str(info.value) and "prefect" in str(info.value)


def test_bad_chain_inputs_fail_before_any_step_runs() -> None:
    ran: list[Any] = []
    two_keys = bf.Chain([ran.append], input_keys=("q", "context"), provider="local")
    assert code_of(lambda: two_keys.invoke("just a string")) is ErrorCode.INVALID_INPUT
    with_memory = bf.Chain([ran.append], memory=bf.BufferMemory(), provider="local")
    assert code_of(lambda: with_memory.invoke(42)) is ErrorCode.INVALID_INPUT
    assert ran == []


def test_non_mapping_output_with_several_output_keys_and_memory() -> None:
    memory = bf.BufferMemory()
    chain = bf.Chain(
        [lambda d: "plain text"], memory=memory, output_keys=("a", "b"), provider="local"
    )
    assert code_of(lambda: chain.invoke("hi")) is ErrorCode.INVALID_INPUT
    assert memory.exchanges == []  # nothing half-written
    chain_ok = bf.Chain(
        [lambda d: {"a": 1, "b": 2}], memory=memory, output_keys=("a", "b"), provider="local"
    )
    assert chain_ok.invoke("hi") == {"a": 1, "b": 2}
    assert memory.exchanges == [({"input": "hi"}, {"a": 1, "b": 2})]


def test_buffer_memory_keeps_the_last_k() -> None:
    memory = bf.BufferMemory(memory_key="chat", k=2)
    for i in range(3):
        memory.save_context({"input": f"q{i}"}, {"output": f"a{i}"})
    assert memory.load_memory_variables({}) == {"chat": "Human: q1\nAI: a1\nHuman: q2\nAI: a2"}
    memory.clear()
    assert memory.load_memory_variables({}) == {"chat": ""}
    assert code_of(lambda: bf.BufferMemory(k=0)) is ErrorCode.INVALID_CONFIG


def test_invalid_batch_concurrency() -> None:
    chain = bf.Chain([len], provider="local")
    assert code_of(lambda: chain.batch(["a"], max_concurrency=0)) is ErrorCode.INVALID_CONFIG
