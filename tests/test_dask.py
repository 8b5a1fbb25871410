"""A graph whose nodes run on a real Dask cluster (2 worker processes) via prefect-dask.

The workers report to the session's Prefect server (not a temporary one each:
measured, that costs 11-16 s per worker process).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

import beluga_flows as bf

distributed = pytest.importorskip("distributed")
prefect_dask = pytest.importorskip("prefect_dask")


@pytest.fixture(scope="module")
def cluster(prefect_server: Any) -> Iterator[Any]:
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as local:
        yield local


def left(state: dict[str, Any]) -> dict[str, Any]:
    return {"left": (os.getpid(), state["x"] * 2)}


def right(state: dict[str, Any]) -> dict[str, Any]:
    time.sleep(0.3)  # overlaps with left: the two land on different workers
    return {"right": (os.getpid(), state["x"] + 1)}


def join(state: dict[str, Any]) -> dict[str, Any]:
    return {"total": state["left"][1] + state["right"][1]}


def test_graph_nodes_run_in_dask_worker_processes(cluster: Any) -> None:
    with distributed.Client(cluster) as client:
        worker_pids = set(client.run(os.getpid).values())
    runner = prefect_dask.DaskTaskRunner(address=cluster.scheduler_address)
    g = bf.Graph(name="on-dask", task_runner=runner)
    g.add_node("left", left).add_node("right", right).add_node("join", join)
    g.set_entry_point(["left", "right"]).add_edge("left", "join").add_edge("right", "join")

    result = g.invoke({"x": 20})

    assert result["total"] == 61
    pids = {result["left"][0], result["right"][0]}
    assert pids <= worker_pids and os.getpid() not in pids
    assert result.report.iterations == {"left": 1, "right": 1, "join": 1}
