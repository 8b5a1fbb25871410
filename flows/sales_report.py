"""Example: a sales report as a chain of steps.

Reads ``flows/data/sales.csv``, rejects malformed rows, aggregates revenue by
region, product and month, and writes ``<out_dir>/sales_report.md`` and
``sales_summary.json``. Every step is a Prefect task run of the ``sales-report``
flow run, visible in the UI.

    beluga-flows run flows/sales_report.py:sales_report --param out_dir=out
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import beluga_flows as bf

DATA = Path(__file__).parent / "data" / "sales.csv"


@bf.step
def load_rows(inputs: dict[str, Any]) -> list[dict[str, str]]:
    """Read the CSV named by ``inputs["input"]``."""
    with open(inputs["input"], newline="") as fh:
        return list(csv.DictReader(fh))


@bf.step
def clean(rows: list[dict[str, str]]) -> dict[str, Any]:
    """Parse numbers; keep the rows that parse, count the ones that don't."""
    good, rejected = [], 0
    for row in rows:
        try:
            units, price = int(row["units"]), float(row["unit_price"])
        except (TypeError, ValueError):
            rejected += 1
            continue
        if not row["region"] or units <= 0:
            rejected += 1
            continue
        good.append({**row, "units": units, "revenue": round(units * price, 2)})
    return {"rows": good, "rejected": rejected}


@bf.step
def aggregate(data: dict[str, Any]) -> dict[str, Any]:
    """Revenue and units by region, product and month."""
    by: dict[str, dict[str, float]] = {
        k: defaultdict(float) for k in ("region", "product", "month")
    }
    units = 0
    for row in data["rows"]:
        by["region"][row["region"]] += row["revenue"]
        by["product"][row["product"]] += row["revenue"]
        by["month"][row["date"][:7]] += row["revenue"]
        units += row["units"]
    return {
        "rows": len(data["rows"]),
        "rejected": data["rejected"],
        "units": units,
        "revenue": round(sum(by["region"].values()), 2),
        **{f"by_{k}": {n: round(v, 2) for n, v in sorted(d.items())} for k, d in by.items()},
    }


@bf.step(track=False)  # tiny formatting glue: inline, no task run
def render(summary: dict[str, Any]) -> dict[str, Any]:
    """Markdown for the report, next to the summary."""
    lines = [
        "# Sales report",
        "",
        f"{summary['rows']} sales ({summary['rejected']} rows rejected), "
        f"{summary['units']} units, revenue {summary['revenue']:,.2f}",
    ]
    for key in ("by_region", "by_product", "by_month"):
        lines += ["", f"## {key[3:].title()}", "", "| name | revenue |", "|---|---:|"]
        lines += [f"| {name} | {value:,.2f} |" for name, value in summary[key].items()]
    return {"summary": summary, "markdown": "\n".join(lines) + "\n"}


report_chain = bf.Chain([load_rows, clean, aggregate, render], name="sales-report-chain")


@bf.step
def write_report(report: dict[str, Any], out_dir: str) -> dict[str, str]:
    """Write the markdown and JSON files; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "sales_report.md", out / "sales_summary.json"
    md.write_text(report["markdown"])
    js.write_text(json.dumps(report["summary"], indent=2))
    return {"markdown": str(md), "json": str(js)}


@bf.flow(name="sales-report", timeout=120)
def sales_report(csv_path: str = str(DATA), out_dir: str = "out") -> dict[str, Any]:
    """Build the sales report from ``csv_path`` into ``out_dir``."""
    report = report_chain.invoke(csv_path)
    files = write_report(report, out_dir)
    return {
        "revenue": report["summary"]["revenue"],
        "rejected": report["summary"]["rejected"],
        **files,
    }


if __name__ == "__main__":
    print(sales_report())
