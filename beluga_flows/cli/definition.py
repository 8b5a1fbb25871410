"""``beluga-flows definition …``: declarative workflows (YAML files) from the command line.

* ``validate FILE...`` checks each file without running anything and prints one line
  per problem, ``FILE:<path>: <message>`` (``FILE: ok`` for a good file); exit 2 if
  any file has a problem (unreadable or malformed YAML included).
* ``run FILE [--input JSON] [--actions FILE.py]... [--local]`` runs it (on Prefect,
  reporting to the configured API or the home's server; in-process with ``--local``)
  and prints the ``ExecutionResult`` as JSON: exit 0 when the run completed, 1 when
  it did not, 2 when the definition has problems.
* ``draw FILE [--out FILE]`` prints its mermaid drawing; ``schema`` prints the JSON
  Schema of the file format.

Actions come from the registry: each ``--actions FILE.py`` is imported first (once
per process, like a ``FILE:NAME`` target) so its ``@bf.action`` functions register.

Example::

    beluga-flows definition validate workflows/*.yaml
    beluga-flows definition run workflows/onboarding.yaml --actions workflows/actions.py \\
        --input '{"customer_id": "c-1"}' --local
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.tools.deploy import import_actions

__all__ = ["register"]


def _problem_lines(err: OrchestratorError) -> list[str]:
    """``<path>: <message>``, one line per problem an error reports (its ``.problems``
    when it has them, else itself): a message on several lines is joined into one."""
    problems = getattr(err, "problems", None) or [err]
    lines: list[str] = []
    for problem in problems:
        text = problem.message if isinstance(problem, OrchestratorError) else str(problem)
        lines.append(" ".join(part.strip() for part in text.splitlines() if part.strip()))
    return lines


def _format(file: str, line: str) -> str:
    """``FILE:<path>: <message>``; a problem of the whole file reads ``FILE: <message>``."""
    for prefix in (f"{file}: ", f"{Path(file)}: "):  # the loader names the file itself
        line = line.removeprefix(prefix)
    head = line.partition(": ")[0]
    located = bool(head) and " " not in head and line != head
    return f"{file}:{line}" if located else f"{file}: {line}"


def _problems(file: str) -> tuple[Any, list[str]]:
    """(the definition or ``None``, its problems as printed lines)."""
    from beluga_flows.definitions.engine import WorkflowEngine
    from beluga_flows.definitions.model import WorkflowDefinition

    try:
        definition = WorkflowDefinition.from_yaml(file)
    except OrchestratorError as err:  # unreadable, malformed YAML, the schema
        return None, [_format(file, line) for line in _problem_lines(err)]
    found = WorkflowEngine().validate(definition)
    return definition, [_format(file, line) for err in found for line in _problem_lines(err)]


def _validate(args: argparse.Namespace) -> int:
    import_actions(args.actions or [])
    failed = False
    for file in args.files:
        _, lines = _problems(file)
        for line in lines:
            print(line)
        if not lines:
            print(f"{file}: ok")
        failed = failed or bool(lines)
    return 2 if failed else 0


def _input(raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as err:
        raise OrchestratorError(
            "cli", f"--input is not JSON: {err}", ErrorCode.INVALID_INPUT
        ) from None
    if not isinstance(value, dict):
        raise OrchestratorError(
            "cli", f"--input must be a JSON object, got {raw!r}", ErrorCode.INVALID_INPUT
        )
    return value


def _run(args: argparse.Namespace) -> int:
    from beluga_flows.definitions.engine import WorkflowEngine

    input_data = _input(args.input)
    import_actions(args.actions or [])
    definition, lines = _problems(args.file)
    if lines:
        for line in lines:
            print(line, file=sys.stderr)
        return 2
    if not args.local:
        from beluga_flows.tools.server import connect_if_running

        connect_if_running()
    engine = WorkflowEngine(provider="local" if args.local else "prefect")
    result = engine.execute(definition, input_data)
    print(json.dumps(result.to_dict(), default=str, indent=2))
    return 0 if result.status == "completed" else 1


def _draw(args: argparse.Namespace) -> int:
    from beluga_flows.cli.deploy import print_or_write
    from beluga_flows.definitions.model import WorkflowDefinition

    text = WorkflowDefinition.from_yaml(args.file).draw_mermaid()  # needs no actions
    return print_or_write(text, args.out)


def _schema(args: argparse.Namespace) -> int:
    from beluga_flows.definitions.model import WorkflowDefinition

    print(json.dumps(WorkflowDefinition.json_schema(), indent=2, sort_keys=True))
    return 0


def register(sub: Any) -> None:
    """Add ``definition`` and its subcommands to the ``beluga-flows`` parser."""
    parser = sub.add_parser("definition", help="declarative workflows (YAML definitions)")
    cmds = parser.add_subparsers(dest="definition_command", required=True)

    def actions(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--actions",
            action="append",
            metavar="FILE.py",
            help="a Python file registering actions, imported first (repeatable)",
        )

    validate = cmds.add_parser("validate", help="check definitions: one line per problem")
    validate.add_argument("files", nargs="+", metavar="FILE", help="definition files (YAML)")
    actions(validate)
    validate.set_defaults(func=_validate)
    run = cmds.add_parser("run", help="run a definition and print its result as JSON")
    run.add_argument("file", metavar="FILE", help="a definition file (YAML)")
    run.add_argument("--input", default=None, metavar="JSON", help="the input, a JSON object")
    actions(run)
    run.add_argument("--local", action="store_true", help="run in-process, without Prefect")
    run.set_defaults(func=_run)
    draw = cmds.add_parser("draw", help="print a definition's mermaid drawing")
    draw.add_argument("file", metavar="FILE", help="a definition file (YAML)")
    draw.add_argument("--out", default=None, help="write to this file instead of stdout")
    draw.set_defaults(func=_draw)
    schema = cmds.add_parser("schema", help="print the JSON Schema of definition files")
    schema.set_defaults(func=_schema)
