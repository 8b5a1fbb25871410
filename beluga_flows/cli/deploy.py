"""``beluga-flows serve | deploy | list | graph draw``: deployments and graphs.

* ``serve [deployments/…]`` registers the declared deployments and runs their
  schedules in this one process (a Prefect runner): no worker needed.
* ``deploy [deployments/…] --pool NAME`` registers them with a work pool (created as
  a *process* pool when missing) for machines running ``prefect worker start``.
* ``list`` shows deployments with their schedules and the latest runs.
* ``graph draw FILE:GRAPH [--out FILE]`` prints a graph's mermaid drawing.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
from pathlib import Path
from typing import Any

from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = ["register"]


def _describe(spec: Any) -> str:
    schedule = spec.schedule
    if schedule is None:
        when = "no schedule"
    elif schedule.cron is not None:
        when = f"cron {schedule.cron!r}"
    elif schedule.interval is not None:
        when = f"every {schedule.interval:g} s"
    else:
        when = f"rrule {schedule.rrule!r}"
    if schedule is not None and schedule.timezone:
        when += f" ({schedule.timezone})"
    return f"{spec.name:<24} {spec.entrypoint:<44} {when}"


def _serve(args: argparse.Namespace) -> int:
    from beluga_flows.engine.prefect.serve import serve_deployments
    from beluga_flows.tools import deploy

    loaded = deploy.load(args.paths)
    built = deploy.build(loaded, served=True)  # all import before anything registers
    print(f"Serving {len(built)} deployment(s) (Ctrl-C stops):", flush=True)
    for item in loaded:
        print(f"  {_describe(item.spec)}", flush=True)
    serve_deployments(built, limit=args.limit)
    print("Stopped serving.", flush=True)
    return 0


async def _ensure_pool(name: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            await client.read_work_pool(name)
            return False
        except ObjectNotFound:
            await client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            return True


def _deploy(args: argparse.Namespace) -> int:
    from beluga_flows.tools import deploy

    loaded = deploy.load(args.paths)
    named = [args.pool or item.spec.work_pool for item in loaded]
    pools: set[str] = {p for p in named if p}
    if not all(named):
        raise OrchestratorError(
            "deploy",
            "name a work pool: --pool NAME or work_pool: in every file",
            ErrorCode.INVALID_CONFIG,
        )
    built = deploy.build(loaded, work_pool=args.pool)
    for pool in sorted(pools):
        if asyncio.run(_ensure_pool(pool)):
            print(f"created process work pool {pool!r}")
    for item, deployment in zip(loaded, built, strict=True):
        deployment_id = deployment.apply()
        print(f"deployed {_describe(item.spec)}  id={deployment_id}")
    print(f"Start a worker: prefect worker start --pool {' / '.join(sorted(pools))}")
    return 0


async def _overview(limit: int) -> tuple[list[Any], list[Any], dict[Any, str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    not_future = FlowRunFilter(  # scheduled runs sort first by start time: leave them out
        state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=[StateType.SCHEDULED]))
    )
    async with get_client() as client:
        deployments = await client.read_deployments()
        runs = await client.read_flow_runs(
            flow_run_filter=not_future, sort=FlowRunSort.START_TIME_DESC, limit=limit
        )
        flows = {f.id: f.name for f in await client.read_flows()}
    return deployments, runs, flows


def _schedule_text(schedule: Any) -> str:
    if getattr(schedule, "cron", None):
        text = f"cron {schedule.cron!r}"
    elif getattr(schedule, "interval", None):
        text = f"every {schedule.interval.total_seconds():g} s"
    else:
        text = f"rrule {getattr(schedule, 'rrule', '?')!r}"
    tz = getattr(schedule, "timezone", None)
    return f"{text} ({tz})" if tz and tz != "UTC" else text


def _list(args: argparse.Namespace) -> int:
    deployments, runs, flows = asyncio.run(_overview(args.runs))
    print(f"Deployments ({len(deployments)}):")
    for d in deployments:
        schedules = ", ".join(_schedule_text(s.schedule) for s in d.schedules) or "no schedule"
        status = "PAUSED" if d.paused else getattr(d.status, "value", d.status) or "?"
        print(f"  {flows.get(d.flow_id, '?') + '/' + d.name:<40} {status:<10} {schedules}")
    print(f"Latest runs ({len(runs)}):")
    for r in runs:
        state = r.state.name if r.state else "?"
        tags = ",".join(t for t in r.tags if t.startswith(("beluga:", "workflow:")))
        print(f"  {r.id} {flows.get(r.flow_id, '?'):<20} {r.name:<24} {state:<10} {tags}")
    return 0


def _graph_draw(args: argparse.Namespace) -> int:
    from beluga_flows.graph.builder import CompiledGraph, Graph
    from beluga_flows.tools.targets import load_target

    obj = load_target(args.target)
    if inspect.isfunction(obj):
        obj = obj()  # a builder function: build(...) -> Graph
    if isinstance(obj, Graph):
        obj = obj.compile()
    if not isinstance(obj, CompiledGraph):
        raise OrchestratorError(
            "cli", f"{args.target} is not a bf.Graph (got {obj!r})", ErrorCode.INVALID_INPUT
        )
    return print_or_write(obj.draw_mermaid(), args.out)


def print_or_write(text: str, out: str | None) -> int:
    """Print ``text``, or write it to the file ``out`` (saying so); exit code 0."""
    if out:
        Path(out).write_text(text + "\n")
        print(f"wrote {out}")
    else:
        print(text)
    return 0


def register(sub: Any) -> None:
    """Add ``serve``, ``deploy``, ``list`` and ``graph`` to the ``beluga-flows`` parser."""
    serve = sub.add_parser("serve", help="serve scheduled deployments in this process")
    serve.add_argument("paths", nargs="*", help="deployment files or folders (deployments/)")
    serve.add_argument("--limit", type=int, default=None, help="max concurrent runs")
    serve.set_defaults(func=_serve)
    deploy = sub.add_parser("deploy", help="register deployments with a work pool")
    deploy.add_argument("paths", nargs="*", help="deployment files or folders (deployments/)")
    deploy.add_argument("--pool", default=None, help="work pool (else the files' work_pool)")
    deploy.set_defaults(func=_deploy)
    listing = sub.add_parser("list", help="deployments and the latest runs")
    listing.add_argument("--runs", type=int, default=10, help="how many runs to show")
    listing.set_defaults(func=_list)
    graph = sub.add_parser("graph", help="graph tools")
    graph_cmds = graph.add_subparsers(dest="graph_command", required=True)
    draw = graph_cmds.add_parser("draw", help="print a graph's mermaid drawing")
    draw.add_argument("target", help="FILE:NAME of a bf.Graph or compiled graph")
    draw.add_argument("--out", default=None, help="write to this file instead of stdout")
    draw.set_defaults(func=_graph_draw)
