"""Router and scatter/gather, built from the graph, on both engines."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import beluga_flows as bf
from beluga_flows import ErrorCode, OrchestratorError


def classify(text: str) -> str:
    return "billing" if "charge" in text else "tech" if "error" in text else "other"


def test_router_sends_the_original_input_to_one_route(engine: str) -> None:
    seen: list[Any] = []

    def billing(text: str) -> str:
        seen.append(text)
        return "refund issued"

    router = bf.Router(
        classify, {"billing": billing, "tech": lambda t: "reboot"}, fallback=lambda t: f"human: {t}"
    )
    assert router.invoke("double charge") == "refund issued" and seen == ["double charge"]
    assert router.invoke("error 42") == "reboot"
    assert router.invoke("hello") == "human: hello"


def test_router_without_fallback_names_the_unknown_route(engine: str) -> None:
    router = bf.Router(classify, {"billing": lambda t: "ok"})
    with pytest.raises(OrchestratorError) as info:
        router.invoke("hello")
    assert info.value.code is ErrorCode.NOT_FOUND and "'other'" in str(info.value)


def test_scatter_gather_keeps_worker_order(engine: str) -> None:
    async def slow(q: str) -> str:
        await asyncio.sleep(0.2)
        return f"slow:{q}"

    def fast(q: str) -> str:
        return f"fast:{q}"

    upper = bf.step(track=False)(str.upper)
    sg = bf.scatter_gather([slow, fast, upper], aggregate=lambda rs: " | ".join(rs))
    assert sg.invoke("q") == "slow:q | fast:q | Q"


def test_scatter_gather_reports_the_first_failure_by_index(engine: str) -> None:
    async def late_failure(q: str) -> None:
        await asyncio.sleep(0.3)
        raise KeyError("first by index")

    def early_failure(q: str) -> None:
        raise ValueError("first in time")

    sg = bf.scatter_gather([str.upper, late_failure, early_failure], aggregate=list)
    with pytest.raises(OrchestratorError) as info:
        sg.invoke("q")
    assert info.value.code is ErrorCode.EXECUTION_FAILED
    assert info.value.worker == 1 and isinstance(info.value.__cause__, KeyError)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "build",
    [
        lambda: bf.Router("not callable", {"a": len}),
        lambda: bf.Router(len, {}),
        lambda: bf.Router(len, {"a": 3}),
        lambda: bf.scatter_gather([], aggregate=list),
        lambda: bf.scatter_gather([len, None], aggregate=list),
        lambda: bf.scatter_gather([len], aggregate="sum"),
    ],
)
def test_bad_patterns_are_invalid_config(build: Any) -> None:
    with pytest.raises(OrchestratorError) as info:
        build()
    assert info.value.code is ErrorCode.INVALID_CONFIG
