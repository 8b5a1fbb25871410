"""The orchestrator on a real Prefect server and a real Redis: health, the health
monitor, the CLI's exit codes, and the cross-process admission limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import beluga_flows as bf
from beluga_flows._sync import run_sync
from beluga_flows.tools.server import LocalServer, free_port

ROOT = Path(__file__).resolve().parent.parent


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/api"


def test_healthy_against_the_real_server(
    prefect_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", prefect_server.api_url)
    report = bf.new_orchestrator().health()
    assert report.healthy
    api = report.components["prefect_api"]
    assert api.status == "ok" and api.latency_ms is not None and api.latency_ms > 0
    assert report.components["breaker_store"].status == "ok"
    assert bf.new_orchestrator().check().healthy


def test_a_dead_api_is_down_and_check_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", _dead_url())
    orch = bf.new_orchestrator()
    report = orch.health(timeout=3)
    assert not report.healthy
    assert report.components["prefect_api"].status == "down"
    assert report.failed == ["prefect_api"]
    with pytest.raises(bf.OrchestratorError) as err:
        orch.check(timeout=3)
    assert err.value.code is bf.ErrorCode.RESOURCE_EXHAUSTED
    assert "prefect_api" in str(err.value)


def test_an_open_breaker_is_degraded_by_name(
    prefect_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", prefect_server.api_url)
    breaker = bf.CircuitBreaker("orch-health-llm")
    breaker.trip()
    try:
        report = bf.new_orchestrator().health()
    finally:
        breaker.reset()
    assert report.components["breakers"].status == "degraded"
    assert "orch-health-llm" in report.components["breakers"].detail
    assert report.healthy  # degraded is reported, but does not fail a liveness probe


def test_a_redis_store_is_pinged(
    prefect_server: LocalServer, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", prefect_server.api_url)
    store = bf.RedisStore(redis_url)
    dead = bf.RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=1)
    try:
        up = bf.new_orchestrator(breaker_store=store).health()
        down = bf.new_orchestrator(breaker_store=dead).health()
    finally:
        store.close()
        dead.close()
    assert up.healthy and up.components["breaker_store"].status == "ok"
    assert up.components["breaker_store"].latency_ms is not None
    assert not down.healthy and down.failed == ["breaker_store"]


def test_the_monitor_counts_checks_and_sees_changes(
    prefect_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", prefect_server.api_url)
    state = {"status": "ok"}
    bf.register_chain_provider(
        "t-flaky", lambda steps, **o: bf.Chain(steps, **o), health=lambda: state["status"]
    )
    orch = bf.new_orchestrator(name="monitored", health_check_interval=0.05)
    monitor = orch.start_health_monitor()
    try:
        assert orch.start_health_monitor() is monitor  # one per orchestrator
        assert monitor.wait_for_checks(2, timeout=60)
        assert monitor.last is not None and monitor.last.healthy
        state["status"] = "down"
        seen = monitor.checks
        assert monitor.wait_for_checks(seen + 2, timeout=60)
        assert monitor.last is not None and not monitor.last.healthy
        assert monitor.last.failed == ["t-flaky"]
    finally:
        orch.stop_health_monitor()
    assert not monitor.running


def _cli(*args: str, api_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_API_URL": api_url}
    return subprocess.run(
        [sys.executable, "-m", "beluga_flows.cli", "health", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_exit_codes(prefect_server: LocalServer) -> None:
    ok = _cli(api_url=prefect_server.api_url)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("healthy") and "prefect_api" in ok.stdout
    bad = _cli("--json", "--timeout", "3", api_url=_dead_url())
    assert bad.returncode == 1, bad.stderr
    report: dict[str, Any] = json.loads(bad.stdout)
    assert report["healthy"] is False
    assert report["components"]["prefect_api"]["status"] == "down"


def test_prefect_chains_hold_the_orchestrators_global_limit(
    prefect_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client

    monkeypatch.setenv("PREFECT_API_URL", prefect_server.api_url)
    orch = bf.new_orchestrator(name="gl-test", max_concurrent_chains=3, chain_retries=0)

    @bf.step
    def double(x: dict[str, int]) -> int:
        return x["input"] * 2

    chain = orch.create_chain([double], provider="prefect")
    assert chain.invoke({"input": 21}) == 42

    async def read() -> Any:
        async with get_client() as client:
            return await client.read_global_concurrency_limit_by_name("beluga-orch-gl-test-chains")

    found = run_sync(read)
    assert found.limit == 3 and found.active_slots == 0
    assert orch.get_metrics()["total_executions"] == 1
