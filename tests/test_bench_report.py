"""bench/run.py keeps what it measured when one of its side benches fails."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

from run import NORMAL, Bench, markdown, side_bench, side_json  # noqa: E402


def test_a_failing_side_bench_is_reported_and_the_rest_is_kept(tmp_path: Path) -> None:
    bench = Bench(settings=NORMAL, tmp=tmp_path)
    # What an earlier side bench (bench/workflow_roundtrips.py) returned.
    bench.meta["workflow"] = "Round trips\n| op | requests |\n|---|---|\n| signal | 3 |"

    side_bench(bench, "no_such_bench.py", "workflow_load")  # exits 2: no such file

    assert "workflow_load" not in bench.meta
    why = bench.meta["failed"]["no_such_bench.py"]
    assert "exit status 2" in why and "No such file" in why
    side_json(bench, "workflow_load")  # nothing to parse: no error
    bench.meta.update(
        date="today",
        nproc=2,
        cpu="cpu",
        platform="linux",
        python="3.11",
        prefect="3",
        langgraph="1",
        beluga_flows="0",
        load_before="0",
    )
    report = markdown(bench)
    assert "**no_such_bench.py failed** (its section is missing)" in report
    assert "## workflow: many live runs in one process" not in report
    assert "## workflow: the Prefect API cost of signals and queries" in report
    assert "| signal | 3 |" in report
