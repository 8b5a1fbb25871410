"""The shape of the package: one front door, one seam to Prefect, documented names."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import beluga_flows as bf

PACKAGE = Path(bf.__file__).parent
ROOT = "beluga_flows"
# The engine adapter is the seam; deploy and the CLI are edges that may import Prefect.
PREFECT_ALLOWED = ("engine.prefect", "tools.deploy", "cli")

EXPORTED = [
    "END",
    "START",
    "Approval",
    "Blackboard",
    "BreakerStore",
    "BufferMemory",
    "Chain",
    "CircuitBreaker",
    "CircuitState",
    "CompiledGraph",
    "ComponentHealth",
    "EnabledFeatures",
    "Engine",
    "ErrorCode",
    "ExecutionResult",
    "Flow",
    "FlowSpec",
    "Graph",
    "GraphReport",
    "GraphResult",
    "Handoff",
    "HealthReport",
    "Hooks",
    "LocalEngine",
    "MemoryStore",
    "NodeStatus",
    "Orchestrator",
    "OrchestratorConfig",
    "OrchestratorError",
    "ProviderLimits",
    "RedisStore",
    "RetryPolicy",
    "Router",
    "Runnable",
    "Step",
    "StepRecord",
    "StepSpec",
    "StepStatus",
    "Supervisor",
    "Workflow",
    "WorkflowClient",
    "WorkflowDefinition",
    "WorkflowEngine",
    "WorkflowHandle",
    "action",
    "compensate",
    "configure_logging",
    "consume_tokens",
    "define_rate_limit",
    "delegate_by_skill",
    "emit",
    "flow",
    "get_metrics",
    "handoff_to",
    "hedge",
    "init_metrics",
    "is_retryable",
    "load_balanced",
    "new_orchestrator",
    "query_handler",
    "register_action",
    "register_chain_provider",
    "register_graph_provider",
    "register_workflow_provider",
    "report_progress",
    "request_approval",
    "round_robin",
    "scatter_gather",
    "serve",
    "step",
    "use_engine",
    "wait_for_signal",
]


def _group(name: str) -> int:
    return 0 if name.isupper() else 1 if name[0].isupper() else 2


def module_name(path: Path) -> str:
    """``core/specs.py`` → ``core.specs``; the package's own ``__init__`` → ``beluga_flows``."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or ROOT


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _absolute(name: str) -> str:
    return ROOT if name == "" else f"{ROOT}.{name}"


def _local(full: str, modules: dict[str, Path]) -> str | None:
    """``beluga_flows.core.specs`` → ``core.specs``; the longest existing module."""
    if full != ROOT and not full.startswith(ROOT + "."):
        return None
    parts = full.split(".")[1:]
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts) or ROOT


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(package modules, top-level outside modules) imported anywhere in the file:
    at the top, lazily inside functions and under ``if TYPE_CHECKING:``. ``from a
    import b`` where ``a.b`` is a module is an import of ``a.b``."""
    inside: set[str] = set()
    outside: set[str] = set()
    package = _absolute(name) if path.name == "__init__.py" else _absolute(name).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            targets = [f"{source}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            local = _local(target, modules)
            if local is None:
                outside.add(target.split(".")[0])
            elif local != name:
                inside.add(local)
    return inside, outside


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    modules = all_modules()
    graph: dict[str, set[str]] = {}
    outside: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name], outside[name] = imports_of(name, path, modules)
    return graph, outside


def layer_order() -> dict[str, int]:
    """The numbered layer list of the package docstring: prefix → layer number."""
    doc = bf.__doc__ or ""
    layers: dict[str, int] = {}
    for line in doc.split("Layers, lowest first.")[1].splitlines():
        number, dot, entries = line.strip().partition(". ")
        if dot and number.isdigit():
            for entry in entries.split(","):
                layers[entry.strip()] = int(number)
    assert layers, "the package docstring lists no layers"
    return layers


def layer_of(module: str, layers: dict[str, int]) -> int | None:
    matches = [p for p in layers if module == p or module.startswith(p + ".")]
    return layers[max(matches, key=len)] if matches else None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_imports_follow_the_layers_of_the_package_docstring() -> None:
    graph, outside = import_graph()
    layers = layer_order()
    problems: list[str] = []
    for component in cycles(graph):
        edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in component]
        problems.append(f"circle {' / '.join(component)}: {'; '.join(edges)}")
    for module in sorted(graph):
        own = layer_of(module, layers)
        if own is None:
            problems.append(f"{module} is in no layer of the package docstring")
            continue
        for target in sorted(graph[module]):
            theirs = layer_of(target, layers)
            if theirs is not None and theirs > own:
                problems.append(f"back edge {module} ({own}) -> {target} ({theirs})")
        if "prefect" in outside[module] and not any(
            module == p or module.startswith(p + ".") for p in PREFECT_ALLOWED
        ):
            problems.append(f"{module} imports prefect")
    assert problems == [], "\n".join(["", *problems])


def test_the_import_walk_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The walk itself: lazy, TYPE_CHECKING, relative and ``from a import module``."""
    known = ["beluga_flows", "core", "core.runnable", "graph", "graph.chain", "errors"]
    modules = {m: tmp_path for m in [*known, "engine.base", "durable"]}
    source = tmp_path / "decorators.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import prefect.flows\n"
        "from ..errors import OrchestratorError\n"
        "from . import runnable\n"
        "from beluga_flows import durable, __version__\n"
        "if TYPE_CHECKING:\n    from beluga_flows.engine.base import Engine\n"
        "def f():\n    from beluga_flows.graph import chain\n"
    )
    inside, outside = imports_of("core.decorators", source, modules)
    assert inside == {
        "beluga_flows",
        "errors",
        "core.runnable",
        "durable",
        "engine.base",
        "graph.chain",
    }
    assert outside == {"typing", "prefect"}


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
