"""The middleware stack stays below what it serves: it imports no engine, decorator,
graph or durable module at run time (only under ``TYPE_CHECKING``)."""

from __future__ import annotations

import ast
from pathlib import Path

import beluga_flows as bf

ALLOWED = {
    "beluga_flows.errors",
    "beluga_flows._validate",
    "beluga_flows._digest",
    "beluga_flows._threads",
    "beluga_flows._sync",
    "beluga_flows.telemetry",
    "beluga_flows.core.specs",
    "beluga_flows.core.hooks",
    "beluga_flows.core.streams",
    "beluga_flows.engine.base",
}


def runtime_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:  # module level only: no TYPE_CHECKING
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "beluga_flows":
                found |= {f"beluga_flows.{a.name}" for a in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.startswith("beluga_flows")}


def test_middleware_imports_only_what_lies_below_it() -> None:
    imports = runtime_imports(Path(bf.__file__).parent / "core" / "middleware.py")
    assert imports, "the walk found nothing: the test is broken"
    outside = {
        m for m in imports if m not in ALLOWED and not m.startswith("beluga_flows.resilience")
    }
    assert outside == set()


def test_the_execute_module_is_gone() -> None:
    # one sync/async bridge (_sync) and one stack (core.middleware), nothing in between
    assert not (Path(bf.__file__).parent / "_execute.py").exists()
