"""Durable keys hash content, the same in every process (issue 11, defect 1).

A key that fell back to a pickle digest differed between processes for anything
holding a set (every pydantic v2 model, dataclasses with set fields), so a resumed
workflow ran its completed steps again: an order was charged twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from beluga_flows.engine.base import input_hash
from tests.durable_values import Order, keys
from tests.workflow_app import lines

ROOT = Path(__file__).parents[1]


def _run(seed: str, *args: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run(
        [sys.executable, "-m", "tests.durable_values", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_keys_are_the_same_in_processes_with_different_hash_seeds() -> None:
    seen = [json.loads(_run(seed, "keys")) for seed in ("1", "2", "3")]
    assert all(key is not None for key in seen[0].values()), seen[0]
    assert seen[0] == seen[1] == seen[2]
    assert seen[0] == keys()  # and in this process, whatever its seed


def test_keys_follow_content_not_identity() -> None:
    a = Order(order_id=1, sku="x", tags={"p", "q"})
    assert input_hash((a,), {}) == input_hash((Order(order_id=1, sku="x", tags={"q", "p"}),), {})
    assert input_hash((a,), {}) != input_hash((Order(order_id=2, sku="x", tags={"p", "q"}),), {})
    assert input_hash(({1, 2},), {}) != input_hash(([1, 2],), {})
    assert input_hash(({"a": 1},), {}) == input_hash(({"a": 1},), {})
    cyclic: list[object] = []
    cyclic.append(cyclic)
    assert input_hash((cyclic,), {}) is not None  # falls back to a pickle, never raises
    assert input_hash((lambda: 1,), {}) is None  # no content, no pickle: never cached


@pytest.mark.usefixtures("prefect_server")
def test_a_resume_in_another_process_does_not_charge_twice(tmp_path: Path) -> None:
    wid, ledger = f"pyd-{os.urandom(4).hex()}", str(tmp_path / "ledger.txt")
    Path(ledger + ".broken").touch()
    assert _run("1", "execute", wid, ledger) == "execution_failed"  # shipping failed
    assert lines(ledger) == ["charge 7"]
    assert json.loads(_run("2", "resume", wid)) == {"payment": "payment-7", "parcel": "parcel-7"}
    assert lines(ledger) == ["charge 7", "ship 7"]  # charged once
