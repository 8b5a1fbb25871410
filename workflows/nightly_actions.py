"""Actions of ``workflows/nightly_data.yaml``: extract a CSV, load each region into SQLite, report.

``extract_orders`` validates ``csv_path`` (``workflows/data/orders.csv`` by default) and
stages the good rows in ``<out_dir>/staging/orders.csv``; ``load_region`` (one call per
region, in parallel) converts one region's orders to EUR and upserts them into
``<out_dir>/warehouse.db``; ``write_report`` writes ``<out_dir>/nightly_report.md`` and
``<out_dir>/region_totals.csv`` from the database.

    beluga-flows definition run workflows/nightly_data.yaml \\
        --actions workflows/nightly_actions.py --input '{"out_dir": "out/nightly"}'
"""

from __future__ import annotations

import csv
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import beluga_flows as bf

ROOT = Path(__file__).resolve().parent.parent  # the repository: relative paths fall back to it

COLUMNS = ["order_id", "date", "region", "product", "units", "unit_price", "currency"]
EUR_PER = {"EUR": 1.0, "USD": 0.92, "GBP": 1.17, "JPY": 0.0059, "SGD": 0.68}  # fixed rates
SCHEMA = """
CREATE TABLE IF NOT EXISTS sales (
    order_id TEXT PRIMARY KEY, date TEXT NOT NULL, region TEXT NOT NULL, product TEXT NOT NULL,
    units INTEGER NOT NULL, revenue_eur REAL NOT NULL, loaded_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sales_region ON sales (region);
"""


def _resolve(path: str) -> Path:
    """``path`` as given, else relative to the repository (runs from another directory)."""
    given = Path(path)
    return given if given.is_absolute() or given.exists() else ROOT / given


def _connect(out_dir: str) -> sqlite3.Connection:
    return sqlite3.connect(Path(out_dir) / "warehouse.db", timeout=30)


@bf.action
def extract_orders(csv_path: str, out_dir: str) -> dict[str, Any]:
    """Validate and stage the export; return the regions found and the row counts.

    An upstream export still being written (``<csv_path>.lock`` exists) is a plain error,
    which the step's ``retry_policy`` retries; a file with the wrong columns is
    ``INVALID_INPUT``, which it does not.
    """
    source = _resolve(csv_path)
    if source.with_name(source.name + ".lock").exists():
        raise RuntimeError(f"{source.name} is still being written (lock file present)")
    with open(source, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames != COLUMNS:
            raise bf.OrchestratorError(
                "extract_orders",
                f"{source.name}: expected columns {COLUMNS}, got {reader.fieldnames}",
                bf.ErrorCode.INVALID_INPUT,
            )
        good, rejected = [], 0
        for row in reader:
            try:
                ok = int(row["units"]) > 0 and float(row["unit_price"]) >= 0 and bool(row["region"])
            except ValueError:
                ok = False
            if ok:
                good.append(row)
            else:
                rejected += 1
    staging = Path(out_dir) / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    staged = staging / "orders.csv"
    with open(staged, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(good)
    conn = _connect(out_dir)  # the schema, once, before the parallel loads
    try:
        conn.executescript(SCHEMA)
    finally:
        conn.close()
    return {
        "rows": len(good),
        "rejected": rejected,
        "regions": sorted({row["region"] for row in good}),
        "staged_csv": str(staged),
    }


@bf.action
def load_region(region: str, staged_csv: str, out_dir: str) -> dict[str, Any]:
    """Upsert one region's staged orders, in EUR; an unknown currency fails the region."""
    with open(staged_csv, newline="") as fh:
        rows = [row for row in csv.DictReader(fh) if row["region"] == region]
    loaded_at = datetime.now(UTC).isoformat(timespec="seconds")
    records = []
    for row in rows:
        rate = EUR_PER.get(row["currency"])
        if rate is None:
            raise ValueError(
                f"{region}: no exchange rate for {row['currency']} ({row['order_id']})"
            )
        revenue = round(int(row["units"]) * float(row["unit_price"]) * rate, 2)
        records.append(
            (row["order_id"], row["date"], region, row["product"], int(row["units"]), revenue)
        )
    conn = _connect(out_dir)
    try:
        with conn:  # one transaction per region: all of its rows or none
            conn.executemany(
                "INSERT OR REPLACE INTO sales VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(*r, loaded_at) for r in records],
            )
    finally:
        conn.close()
    return {
        "region": region,
        "rows": len(records),
        "revenue_eur": round(sum(r[5] for r in records), 2),
    }


@bf.action
def write_report(
    out_dir: str, transform: dict[str, Any], extracted: int, rejected: int
) -> dict[str, Any]:
    """Region totals from the warehouse, as markdown and CSV; failed regions are listed."""
    conn = _connect(out_dir)
    try:
        totals = conn.execute(
            "SELECT region, COUNT(*), SUM(units), ROUND(SUM(revenue_eur), 2) "
            "FROM sales GROUP BY region ORDER BY region"
        ).fetchall()
    finally:
        conn.close()
    out = Path(out_dir)
    with open(out / "region_totals.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["region", "orders", "units", "revenue_eur"])
        writer.writerows(totals)
    lines = [
        "# Nightly sales load",
        "",
        f"{extracted} rows extracted, {rejected} rejected; "
        f"{transform['successful_steps']} of {transform['total_steps']} regions loaded.",
        "",
        "| region | orders | units | revenue (EUR) |",
        "|---|---:|---:|---:|",
        *(f"| {r} | {n} | {u} | {v:,.2f} |" for r, n, u, v in totals),
    ]
    if transform["failures"]:
        lines += ["", "## Failed regions", ""]
        lines += [f"* `{f['step_id']}`: {f['message']}" for f in transform["failures"]]
    (out / "nightly_report.md").write_text("\n".join(lines) + "\n")
    return {
        "report": str(out / "nightly_report.md"),
        "totals": str(out / "region_totals.csv"),
        "regions": len(totals),
    }
