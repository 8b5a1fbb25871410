"""The shape of the package: one front door, one seam to Prefect, documented names."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import beluga_flows as bf

PACKAGE = Path(bf.__file__).parent
# The engine adapter is the seam; the CLI is an edge that may import Prefect lazily.
ALLOWED_PREFECT_IMPORTERS = {
    "tools/deploy.py",
    "cli/deploy.py",
    "cli/demo.py",
    "cli/main.py",
    "engine/prefect/adapter.py",
    "engine/prefect/limits.py",
    "engine/prefect/runs.py",
    "engine/prefect/host.py",
    "engine/prefect/messages.py",
    "engine/prefect/approval.py",
    "engine/prefect/watch.py",
    "engine/prefect/serve.py",
}

EXPORTED = [
    "END",
    "START",
    "Approval",
    "BreakerStore",
    "BufferMemory",
    "Chain",
    "CircuitBreaker",
    "CircuitState",
    "CompiledGraph",
    "Engine",
    "ErrorCode",
    "Flow",
    "FlowSpec",
    "Graph",
    "GraphReport",
    "GraphResult",
    "LocalEngine",
    "MemoryStore",
    "NodeStatus",
    "OrchestratorError",
    "RedisStore",
    "RetryPolicy",
    "Router",
    "Runnable",
    "Step",
    "StepSpec",
    "StepStatus",
    "Workflow",
    "WorkflowClient",
    "WorkflowHandle",
    "compensate",
    "define_rate_limit",
    "flow",
    "is_retryable",
    "query_handler",
    "report_progress",
    "request_approval",
    "scatter_gather",
    "serve",
    "step",
    "use_engine",
    "wait_for_signal",
]


def _group(name: str) -> int:
    return 0 if name.isupper() else 1 if name[0].isupper() else 2


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_only_the_engine_adapter_imports_prefect() -> None:
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if "prefect" in imported_modules(p)
        and str(p.relative_to(PACKAGE)) not in ALLOWED_PREFECT_IMPORTERS
    ]
    assert offenders == []


def test_exported_names_are_pinned_and_sorted() -> None:
    # constants, then classes, then functions; each group sorted
    assert bf.__all__ == EXPORTED == sorted(EXPORTED, key=lambda n: (_group(n), n))
    for name in bf.__all__:
        assert getattr(bf, name) is not None


def test_every_public_name_has_a_docstring() -> None:
    for name in bf.__all__:
        obj = getattr(bf, name)
        assert inspect.getdoc(obj), name
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and inspect.isfunction(member):
                    assert inspect.getdoc(member), f"{name}.{attr}"


def test_modules_stay_small() -> None:
    sizes = {
        str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")
    }
    assert {m: n for m, n in sizes.items() if n > 400} == {}
