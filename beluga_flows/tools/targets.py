"""``FILE:NAME`` targets: load the object a file defines, parse ``k=v`` params, run it.

Shared by the CLI commands (``run``, ``demo``, ``workflow``, ``graph draw``) and by
deployment files (:mod:`beluga_flows.tools.deploy` imports every entrypoint with
:func:`load_target`), so it lives below both: nothing here imports the CLI.

Example::

    report = load_target("flows/sales_report.py:sales_report")
    run_target(report, parse_params(["csv_path=flows/data/sales.csv"]))
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import keyword
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from beluga_flows import _sync
from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = ["check_params", "load_target", "parse_params", "run_target"]


def load_target(target: str, *, what: str | None = None) -> Any:
    """``path/to/file.py:name`` → the object ``name`` defined in that file.

    The file is imported once per process without shadowing anything: its module
    name is the file's stem unless that names another importable module (then
    a private one), and its folder is searched *after* the stdlib and site
    packages (a sibling ``helpers.py`` still imports). An error raised while it
    imports is ``INVALID_CONFIG`` naming ``what`` (default: the file)."""
    path_text, sep, name = target.rpartition(":")
    if not sep or not path_text or not name:
        raise OrchestratorError(
            "cli", f"expected FILE:NAME, got {target!r}", ErrorCode.INVALID_INPUT
        )
    path = Path(path_text).resolve()
    if not path.is_file():
        raise OrchestratorError("cli", f"no such file: {path_text}", ErrorCode.NOT_FOUND)
    module_name = _module_name(path)
    module = sys.modules.get(module_name)
    if module is None or getattr(module, "__file__", None) != str(path):  # load once
        module = _import_file(path, module_name, what or path_text)
    if not hasattr(module, name):
        raise OrchestratorError("cli", f"{path_text} defines no {name!r}", ErrorCode.NOT_FOUND)
    return getattr(module, name)


def _module_name(path: Path) -> str:
    """The stem when it names nothing else importable (what Prefect's runner calls the
    same file, so pickled results refer to one name in both), else the name Prefect's
    runner falls back to for a taken stem: never ``email`` for ``flows/email.py``."""
    stem = path.stem
    if stem.isidentifier() and not keyword.iskeyword(stem):
        loaded = sys.modules.get(stem)
        try:
            found = importlib.util.find_spec(stem) if loaded is None else loaded.__spec__
        except (ImportError, ValueError):
            found = None
        if found is None or found.origin == str(path):
            return stem
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:16]
    return f"__prefect_loader_{digest}__"


def _import_file(path: Path, module_name: str, what: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))  # last: it shadows no installed module
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[module_name]
        raise OrchestratorError(
            "cli", f"{what} does not import: {type(err).__name__}: {err}", ErrorCode.INVALID_CONFIG
        ) from err
    return module


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``k=v`` pairs; values are JSON when they parse as JSON, else strings."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise OrchestratorError(
                "cli", f"--param needs k=v, got {pair!r}", ErrorCode.INVALID_INPUT
            )
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def check_params(obj: Any, params: dict[str, Any]) -> None:
    """``INVALID_INPUT`` naming the parameter when ``obj`` cannot take ``params``
    (checked before the call: a ``TypeError`` raised inside it is its own failure)."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return  # no signature to check against: the call will tell
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    unknown = [k for k in params if k not in signature.parameters and not takes_any]
    try:
        if unknown:
            raise TypeError(f"unknown parameter {', '.join(map(repr, unknown))}")
        signature.bind(**params)
    except TypeError as err:
        accepted = ", ".join(signature.parameters) or "none"
        raise OrchestratorError(
            "cli",
            f"{getattr(obj, 'name', obj)!s}: {err} (--param names it accepts: {accepted})",
            ErrorCode.INVALID_INPUT,
        ) from None


def run_target(obj: Any, params: dict[str, Any]) -> Any:
    """Call a flow/step with ``params`` as keyword arguments, or invoke a Runnable."""
    from beluga_flows.core.runnable import Runnable

    if isinstance(obj, Runnable) and not callable(getattr(obj, "fn", None)):
        return obj.invoke(params)
    if not callable(obj):
        raise OrchestratorError("cli", f"{obj!r} is not runnable", ErrorCode.INVALID_INPUT)
    check_params(obj, params)
    result = obj(**params)
    if inspect.isawaitable(result):
        return _sync.run_sync(lambda: result)
    return result
