"""``beluga-flows definition validate | run | draw | schema``: in-process through
``main([...])`` and through the real command line."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from beluga_flows.cli.main import main
from beluga_flows.definitions.actions import unregister_action
from beluga_flows.tools.server import LocalServer
from tests.test_cli import cli  # the beluga-flows CLI in a subprocess

ACTIONS = """\
import beluga_flows as bf


@bf.action("hello_{uid}")
def hello(who: str) -> str:
    return f"hello {{who}}"


@bf.action("shout_{uid}")
def shout(text: str) -> str:
    return text.upper()


@bf.action("boom_{uid}")
def boom(data: dict) -> None:
    raise ValueError("boom")
"""

GOOD = """\
workflow_id: greet-{uid}
steps:
  - step_id: hello
    action: hello_{uid}
    input_mapping: {{who: name}}
    output_mapping: {{greeting: result}}
  - step_id: shout
    action: shout_{uid}
    dependencies: [hello]
    input_mapping: {{text: greeting}}
    output_mapping: {{loud: result}}
"""

FAILING = """\
workflow_id: fails-{uid}
steps:
  - step_id: explode
    action: boom_{uid}
"""

SCHEMA_PROBLEMS = """\
workflow_id: bad
steps:
  - step_id: a
    action: x
    timeout: -1
  - step_id: b
    type: parallel
    parallel_failure_threshold: 2
    parallel_steps:
      - {{step_id: c, action: x}}
  - step_id: d
    action: x
    retries: 3
"""

REFERENCE_PROBLEMS = """\
workflow_id: dangling-{uid}
steps:
  - step_id: a
    action: no_such_action_{uid}
  - step_id: b
    action: hello_{uid}
    dependencies: [nowhere]
"""


@dataclass
class Files:
    uid: str
    actions: Path
    good: Path
    failing: Path

    def write(self, name: str, template: str) -> Path:
        path = self.good.parent / name
        path.write_text(template.format(uid=self.uid))
        return path


@pytest.fixture
def files(tmp_path: Path) -> Iterator[Files]:
    """A definition, a failing one and the actions file they need; each test gets its
    own action names (the registry is per process) and frees them afterwards."""
    uid = uuid.uuid4().hex[:8]
    made = Files(uid, tmp_path / f"actions_{uid}.py", tmp_path / "good.yaml", tmp_path / "f.yaml")
    made.actions.write_text(ACTIONS.format(uid=uid))
    made.good.write_text(GOOD.format(uid=uid))
    made.failing.write_text(FAILING.format(uid=uid))
    yield made
    for name in ("hello", "shout", "boom"):
        unregister_action(f"{name}_{uid}")


def test_validate_a_good_file(files: Files, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["definition", "validate", str(files.good), "--actions", str(files.actions)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.splitlines() == [f"{files.good}: ok"]


def test_validate_prints_one_line_per_problem_with_its_path(
    files: Files, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = files.write("bad.yaml", SCHEMA_PROBLEMS)
    code = main(
        ["definition", "validate", str(bad), str(files.good), "--actions", str(files.actions)]
    )
    lines = capsys.readouterr().out.splitlines()
    assert code == 2
    problems = [ln for ln in lines if ln.startswith(f"{bad}:")]
    assert len(problems) == 3, lines
    assert problems[0].startswith(f"{bad}:steps[0].timeout: ")
    assert problems[1].startswith(f"{bad}:steps[1].parallel_failure_threshold: ")
    assert problems[2].startswith(f"{bad}:steps[2].retries: ")
    assert f"{files.good}: ok" in lines  # the other file is still checked


def test_validate_reports_unknown_steps_and_actions(
    files: Files, capsys: pytest.CaptureFixture[str]
) -> None:
    dangling = files.write("dangling.yaml", REFERENCE_PROBLEMS)
    code = main(["definition", "validate", str(dangling)])  # no --actions: none known
    lines = capsys.readouterr().out.splitlines()
    assert code == 2
    assert all(ln.startswith(f"{dangling}:steps[") for ln in lines), lines
    assert any(f"no_such_action_{files.uid}" in ln for ln in lines), lines
    assert any("nowhere" in ln for ln in lines), lines
    assert any(f"hello_{files.uid}" in ln for ln in lines), lines  # unknown without --actions


def test_validate_malformed_and_missing_files(
    files: Files, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = files.write("broken.yaml", "workflow_id: x\nsteps: [\n  - step_id: a\n")
    missing = files.good.parent / "missing.yaml"
    code = main(["definition", "validate", str(broken), str(missing)])
    lines = capsys.readouterr().out.splitlines()
    assert code == 2
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"{broken}: ") and "YAML" in lines[0]
    assert lines[1].startswith(f"{missing}: ")


def test_schema_is_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["definition", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "properties" in schema and "workflow_id" in schema["properties"]


def test_draw_prints_mermaid(files: Files, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["definition", "draw", str(files.good)]) == 0
    out = capsys.readouterr().out
    assert "flowchart" in out and "hello" in out and "shout" in out
    target = files.good.parent / "drawing.mmd"
    assert main(["definition", "draw", str(files.good), "--out", str(target)]) == 0
    assert "flowchart" in target.read_text()


def test_run_local_prints_the_result(files: Files, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["definition", "run", str(files.good), "--input", '{"name": "ana"}',
         "--actions", str(files.actions), "--local"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out)
    assert result["status"] == "completed"
    assert result["workflow_id"] == f"greet-{files.uid}"
    assert result["result"]["loud"] == "HELLO ANA"
    assert set(result["steps"]) == {"hello", "shout"}


def test_a_failing_run_exits_1(files: Files, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["definition", "run", str(files.failing), "--actions", str(files.actions), "--local"]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 1
    assert result["status"] == "failed"
    assert result["errors"][0]["step_id"] == "explode"
    assert "boom" in result["errors"][0]["message"]


def test_run_refuses_problems_and_bad_input(
    files: Files, capsys: pytest.CaptureFixture[str]
) -> None:
    dangling = files.write("dangling.yaml", REFERENCE_PROBLEMS)
    code = main(["definition", "run", str(dangling), "--actions", str(files.actions), "--local"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert "nowhere" in captured.err and f"{dangling}:steps[1]" in captured.err
    code = main(["definition", "run", str(files.good), "--input", "[1, 2]", "--local"])
    assert code == 2 and "[invalid_input]" in capsys.readouterr().err
    code = main(["definition", "run", str(files.good), "--actions", "nope.py", "--local"])
    assert code == 2 and "[not_found]" in capsys.readouterr().err


def test_the_real_command_line(files: Files) -> None:
    done = cli("definition", "validate", str(files.good), "--actions", str(files.actions))
    assert done.returncode == 0 and done.stdout == f"{files.good}: ok\n", done.stderr
    bad = files.write("bad.yaml", SCHEMA_PROBLEMS)
    done = cli("definition", "validate", str(bad))
    assert done.returncode == 2 and len(done.stdout.splitlines()) == 3, done.stdout
    done = cli(
        "definition", "run", str(files.good), "--input", '{"name": "bo"}',
        "--actions", str(files.actions), "--local",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"]["loud"] == "HELLO BO"


def test_run_on_prefect(
    prefect_server: LocalServer, files: Files, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["definition", "run", str(files.good), "--input", '{"name": "cy"}',
         "--actions", str(files.actions)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out)
    assert result["status"] == "completed" and result["result"]["loud"] == "HELLO CY"
