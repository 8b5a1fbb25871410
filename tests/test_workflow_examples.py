"""The three shipped workflow definitions (workflows/*.yaml), run on the local provider.

Each test runs a real definition with its real actions (files and SQLite under a
temporary ``out_dir``) and checks what a user would look at afterwards: rows in the
database, files written, rows deleted by a rollback, how often a loop polled.
"""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import beluga_flows as bf
from beluga_flows.tools import deploy
from beluga_flows.tools.deploy import import_actions

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
DEFINITIONS = {
    "onboarding": ("onboarding.yaml", "onboarding_actions.py"),
    "incident": ("incident_response.yaml", "incident_actions.py"),
    "nightly": ("nightly_data.yaml", "nightly_actions.py"),
}
S = bf.StepStatus


def definition(name: str, **changes: Any) -> bf.WorkflowDefinition:
    """The shipped definition ``name`` with its actions imported (once per process);
    ``changes`` ({step_id: {field: value}}) edit steps of a copy, e.g. a shorter timeout."""
    file, actions = DEFINITIONS[name]
    import_actions([str(WORKFLOWS / actions)])
    if not changes:
        return bf.WorkflowDefinition.from_yaml(WORKFLOWS / file)
    mapping = yaml.safe_load((WORKFLOWS / file).read_text())
    for step in mapping["steps"]:
        step.update(changes.get(step["step_id"], {}))
    return bf.WorkflowDefinition.from_dict(mapping)


@pytest.fixture
def engine() -> bf.WorkflowEngine:
    """The local provider (this replaces conftest's local-and-Prefect ``engine`` here)."""
    return bf.WorkflowEngine(provider="local")


def rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_each_shipped_definition_validates(engine: bf.WorkflowEngine, name: str) -> None:
    defn = definition(name)
    assert engine.validate(defn) == []
    assert (
        defn.workflow_id
        == yaml.safe_load((WORKFLOWS / DEFINITIONS[name][0]).read_text())["workflow_id"]
    )


def test_editor_schema_is_current_and_named_by_every_definition() -> None:
    # workflows/schema.json is what the modeline points editors at: regenerate it with
    # `beluga-flows definition schema > workflows/schema.json` when the format changes
    shipped = json.loads((WORKFLOWS / "schema.json").read_text())
    assert shipped == bf.WorkflowDefinition.json_schema()
    for file, _ in DEFINITIONS.values():
        first = (WORKFLOWS / file).read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=./schema.json"


# -- onboarding ----------------------------------------------------------------------------


def onboard(
    engine: bf.WorkflowEngine, out: Path, customer_id: str, approvals: dict[str, Any] | None = None
) -> bf.ExecutionResult:
    options = {"approvals": approvals} if approvals else None
    return engine.execute(
        definition("onboarding"),
        {"customer_id": customer_id, "out_dir": str(out)},
        execution_options=options,
    )


def test_small_consumer_limit_is_provisioned_without_approval(
    engine: bf.WorkflowEngine, tmp_path: Path
) -> None:
    result = onboard(engine, tmp_path, "c-1001")
    assert result.status == "completed", result.errors
    db = tmp_path / "onboarding.db"
    assert rows(db, "SELECT account_id, product FROM accounts") == [
        ("ACC-c-1001", "personal-current")
    ]
    assert rows(db, "SELECT customer_id, credit_limit, approved_by FROM credit_lines") == [
        ("c-1001", 5000, "auto")
    ]
    assert rows(db, "SELECT card_id FROM cards") == [("CARD-c-1001",)]
    mail = (tmp_path / "outbox" / "c-1001.eml").read_text()
    assert "To: ana.silva@example.com" in mail and "Ana Silva" in mail  # normalised
    records = result.step_records
    assert records["credit_approval"].status == S.SKIPPED
    assert records["credit_approval"].skipped_reason == "condition_false"
    assert records["open_business_account"].skipped_reason == "branch_not_taken"
    assert result.result["route"] == {"branch": "else", "next": ["open_consumer_account"]}
    assert result.result["checks"]["successful_steps"] == 3
    assert {"workflow", "checks"} <= set(result.sla)
    assert result.rolled_back == [] and not result.rollback_performed


def test_business_above_the_threshold_waits_for_an_approval(
    engine: bf.WorkflowEngine, tmp_path: Path
) -> None:
    approval = {"approved": True, "reviewer": "rita", "comment": "known customer"}
    result = onboard(engine, tmp_path, "c-1002", {"credit_approval": approval})
    assert result.status == "completed", result.errors
    assert result.steps["credit_approval"] == S.COMPLETED
    assert result.result["credit_approval"] == approval
    db = tmp_path / "onboarding.db"
    assert rows(db, "SELECT product FROM accounts") == [("business-current",)]
    assert rows(db, "SELECT credit_limit, approved_by FROM credit_lines") == [(50000, "rita")]


def test_a_rejected_approval_deletes_the_opened_account(
    engine: bf.WorkflowEngine, tmp_path: Path
) -> None:
    no = {"approved": False, "reviewer": "rita", "comment": "too high"}
    result = onboard(engine, tmp_path, "c-1002", {"credit_approval": no})
    assert result.status == "failed"
    assert [(e["step_id"], e["code"]) for e in result.errors] == [
        ("credit_approval", "invalid_state")
    ]
    assert result.rollback_performed and result.rolled_back == ["open_business_account"]
    db = tmp_path / "onboarding.db"
    assert rows(db, "SELECT * FROM accounts") == []  # written, then deleted by close_account
    assert rows(db, "SELECT * FROM credit_lines") == []
    assert result.steps["grant_credit_line"] != S.COMPLETED


def _when(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_an_approval_answered_by_a_signal_while_the_run_waits(
    engine: bf.WorkflowEngine, tmp_path: Path
) -> None:
    results: list[bf.ExecutionResult] = []
    options = {"execution_id": "onb-c-1002"}
    runner = threading.Thread(
        target=lambda: results.append(
            engine.execute(
                definition("onboarding"),
                {"customer_id": "c-1002", "out_dir": str(tmp_path)},
                execution_options=options,
            )
        )
    )
    runner.start()
    db = tmp_path / "onboarding.db"
    _when(lambda: rows(db, "SELECT * FROM accounts") != [])  # waiting at the approval now
    assert rows(db, "SELECT * FROM credit_lines") == []
    engine.signal("onb-c-1002", "approval", {"approved": True, "reviewer": "ana"})
    runner.join(60)
    (result,) = results
    assert result.status == "completed", result.errors
    assert rows(db, "SELECT approved_by FROM credit_lines") == [("ana",)]


def test_cancelling_a_waiting_run_rolls_it_back(engine: bf.WorkflowEngine, tmp_path: Path) -> None:
    results: list[bf.ExecutionResult] = []
    runner = threading.Thread(
        target=lambda: results.append(
            engine.execute(
                definition("onboarding"),
                {"customer_id": "c-1002", "out_dir": str(tmp_path)},
                execution_options={"execution_id": "onb-cancel"},
            )
        )
    )
    runner.start()
    db = tmp_path / "onboarding.db"
    _when(lambda: rows(db, "SELECT * FROM accounts") != [])
    time.sleep(0.3)  # the account step has returned: the run waits at credit_approval
    engine.cancel("onb-cancel")
    runner.join(60)
    (result,) = results
    assert result.status == "cancelled"
    assert result.rolled_back == ["open_business_account"]
    assert rows(db, "SELECT * FROM accounts") == []


def test_a_run_that_times_out_at_the_approval_rolls_back(
    engine: bf.WorkflowEngine, tmp_path: Path
) -> None:
    mapping = yaml.safe_load((WORKFLOWS / "onboarding.yaml").read_text())
    mapping["timeout"] = 1  # the whole run: nobody answers the approval in time
    definition("onboarding")  # the actions
    result = engine.execute(
        bf.WorkflowDefinition.from_dict(mapping),
        {"customer_id": "c-1002", "out_dir": str(tmp_path)},
    )
    assert result.status == "timeout"
    assert result.steps["credit_approval"] == S.CANCELLED
    assert result.rolled_back == ["open_business_account"]
    assert rows(tmp_path / "onboarding.db", "SELECT * FROM accounts") == []


def test_two_of_three_checks_are_enough(engine: bf.WorkflowEngine, tmp_path: Path) -> None:
    result = onboard(engine, tmp_path, "c-1003")  # disposable e-mail: fraud check fails
    assert result.status == "completed", result.errors
    assert result.steps["fraud_check"] == S.FAILED
    assert result.steps["checks"] == S.COMPLETED
    checks = result.result["checks"]
    assert (checks["successful_steps"], checks["failed_steps"]) == (2, 1)
    assert [f["step_id"] for f in checks["failures"]] == ["fraud_check"]
    assert "disposable" in checks["failures"][0]["message"]
    assert rows(tmp_path / "onboarding.db", "SELECT account_id FROM accounts") == [("ACC-c-1003",)]


def test_one_of_three_checks_rejects_the_customer(
    engine: bf.WorkflowEngine, tmp_path: Path
) -> None:
    result = onboard(engine, tmp_path, "c-1004")  # no registration, disposable e-mail
    assert result.status == "failed"
    assert result.errors[0]["step_id"] == "checks"
    assert result.errors[0]["code"] == "execution_failed"
    assert result.steps["kyc_check"] == S.FAILED and result.steps["fraud_check"] == S.FAILED
    assert result.steps["credit_check"] == S.COMPLETED
    assert rows(tmp_path / "onboarding.db", "SELECT * FROM accounts") == []  # nothing opened


def test_a_failed_provisioning_step_rolls_back_newest_first(
    engine: bf.WorkflowEngine, tmp_path: Path
) -> None:
    assert onboard(engine, tmp_path, "c-1001").status == "completed"
    result = onboard(engine, tmp_path, "c-1005")  # the card issuer does not serve BR
    assert result.status == "failed"
    assert result.errors[0]["step_id"] == "issue_card"
    assert result.errors[0]["code"] == "invalid_input"
    assert "does not serve BR" in result.errors[0]["message"]
    assert result.rolled_back == ["grant_credit_line", "open_consumer_account"]
    db = tmp_path / "onboarding.db"
    # c-1005's account and credit line were written, then deleted; c-1001 is untouched
    assert rows(db, "SELECT customer_id FROM accounts") == [("c-1001",)]
    assert rows(db, "SELECT customer_id FROM credit_lines") == [("c-1001",)]
    assert rows(db, "SELECT customer_id FROM cards") == [("c-1001",)]
    assert not (tmp_path / "outbox" / "c-1005.eml").exists()


def test_error_handler_posts_a_letter_and_the_run_goes_on(
    engine: bf.WorkflowEngine, tmp_path: Path
) -> None:
    result = onboard(engine, tmp_path, "c-1006")  # no credit file, no e-mail address
    assert result.status == "completed", result.errors
    assert result.steps["credit_check"] == S.FAILED  # 2 of 3: the limit falls back to 1 000
    assert result.result["credit_limit"] == 1000
    assert result.result["risk_band"] == "unscored"
    welcome = result.step_records["send_welcome"]
    assert welcome.status == S.FAILED and welcome.recovered
    assert welcome.error is not None and "no e-mail" in welcome.error["message"]
    assert result.result["send_welcome"]["channel"] == "letter"
    letter = (tmp_path / "letters" / "c-1006.txt").read_text()
    assert "Duarte Reis" in letter and "Credit limit: 1000" in letter
    assert not (tmp_path / "outbox").exists()
    assert rows(tmp_path / "onboarding.db", "SELECT card_id FROM cards") == [("CARD-c-1006",)]


# -- incident response ---------------------------------------------------------------------


def respond(
    engine: bf.WorkflowEngine,
    out: Path,
    recover_after: int,
    approvals: dict[str, Any] | None = None,
    **changes: Any,
) -> bf.ExecutionResult:
    return engine.execute(
        definition("incident", **changes),
        {
            "incident_id": "inc-7",
            "out_dir": str(out),
            "recover_after": recover_after,
            "poll_interval_s": 0,
        },
        execution_options={"approvals": approvals} if approvals else None,
    )


def timeline(out: Path, event: str) -> list[str]:
    lines = (out / "incident.log").read_text().splitlines()
    return [line for line in lines if f" {event}: " in line]


def test_a_service_that_recovers_stops_the_polling(
    engine: bf.WorkflowEngine, tmp_path: Path
) -> None:
    result = respond(engine, tmp_path, recover_after=3)
    assert result.status == "completed", result.errors
    assert result.step_records["wait_for_recovery"].iterations == 3
    page = json.loads((tmp_path / "status_page.json").read_text())
    assert (page["polls"], page["status"], page["region"]) == (3, "ok", "primary")
    assert len(timeline(tmp_path, "poll")) == 3
    assert result.steps["resolve"] == S.COMPLETED
    assert result.step_records["escalate"].skipped_reason == "branch_not_taken"
    assert result.steps["failover"] == S.SKIPPED
    assert not (tmp_path / "pages.log").exists()  # nobody was paged
    notes = (tmp_path / "notifications.log").read_text()
    assert "payments-api: recovered by itself (status ok, region primary, 3 polls)" in notes


def test_the_poll_cap_escalates_and_an_approved_failover_runs(
    engine: bf.WorkflowEngine, tmp_path: Path
) -> None:
    yes = {"approved": True, "reviewer": "sre-lead", "comment": "go"}
    result = respond(engine, tmp_path, recover_after=50, approvals={"failover_approval": yes})
    assert result.status == "completed", result.errors
    loop = result.step_records["wait_for_recovery"]
    assert loop.status == S.COMPLETED and loop.iterations == 5  # the cap, then "continue"
    assert json.loads((tmp_path / "status_page.json").read_text())["polls"] == 5
    assert result.steps["resolve"] == S.SKIPPED
    assert result.steps["escalate"] == S.COMPLETED
    assert result.steps["failover"] == S.COMPLETED
    assert (tmp_path / "pages.log").read_text() == "inc-7 on-call\n"
    page = json.loads((tmp_path / "status_page.json").read_text())
    assert (page["status"], page["region"]) == ("ok", "standby")
    assert "failed over to standby" in (tmp_path / "notifications.log").read_text()


def test_an_unanswered_failover_escalates_to_the_incident_commander(
    engine: bf.WorkflowEngine, tmp_path: Path
) -> None:
    # nobody answers: the (shortened) approval timeout applies on_timeout: fail, and the
    # step's error handler pages the incident commander and recovers the step
    result = respond(engine, tmp_path, recover_after=50, failover_approval={"timeout": 0.3})
    assert result.status == "completed", result.errors
    approval = result.step_records["failover_approval"]
    assert approval.status == S.FAILED and approval.recovered
    assert approval.error is not None and approval.error["code"] == "timeout"
    assert result.step_records["failover"].skipped_reason == "condition_false"
    assert (tmp_path / "pages.log").read_text() == "inc-7 on-call\ninc-7 incident-commander\n"
    assert "fail-over no answer" in timeline(tmp_path, "escalated")[-1]
    assert json.loads((tmp_path / "status_page.json").read_text())["region"] == "primary"
    assert "still degraded, escalated" in (tmp_path / "notifications.log").read_text()


def test_on_max_iterations_fail_stops_the_run(engine: bf.WorkflowEngine, tmp_path: Path) -> None:
    result = respond(
        engine, tmp_path, recover_after=50, wait_for_recovery={"on_max_iterations": "fail"}
    )
    assert result.status == "failed"
    assert result.errors[0]["step_id"] == "wait_for_recovery"
    assert result.errors[0]["code"] == "workflow_deadlock"
    assert len(timeline(tmp_path, "poll")) == 5
    assert not (tmp_path / "pages.log").exists()


# -- nightly data --------------------------------------------------------------------------


def nightly(engine: bf.WorkflowEngine, out: Path, csv_path: Path | None = None) -> Any:
    data = {"out_dir": str(out)}
    if csv_path is not None:
        data["csv_path"] = str(csv_path)
    return engine.execute(definition("nightly"), data)


def test_nightly_loads_every_region_and_writes_the_report(
    engine: bf.WorkflowEngine, tmp_path: Path
) -> None:
    result = nightly(engine, tmp_path)
    assert result.status == "completed", result.errors
    assert result.result["regions"] == ["apac", "eu", "na"]
    assert [result.steps[f"load_region[{i}]"] for i in range(3)] == [S.COMPLETED] * 3
    db = tmp_path / "warehouse.db"
    assert rows(db, "SELECT region, COUNT(*) FROM sales GROUP BY region ORDER BY region") == [
        ("apac", 9),
        ("eu", 9),
        ("na", 9),
    ]
    with open(tmp_path / "region_totals.csv", newline="") as fh:
        totals = list(csv.DictReader(fh))
    assert [t["region"] for t in totals] == ["apac", "eu", "na"]
    (eu_revenue,) = rows(db, "SELECT ROUND(SUM(revenue_eur), 2) FROM sales WHERE region='eu'")[0]
    assert float(totals[1]["revenue_eur"]) == eu_revenue
    report = (tmp_path / "nightly_report.md").read_text()
    assert "27 rows extracted, 2 rejected; 3 of 3 regions loaded." in report
    assert "Failed regions" not in report
    # a second night with the same export replaces rows instead of duplicating them
    assert nightly(engine, tmp_path).status == "completed"
    assert rows(db, "SELECT COUNT(*) FROM sales") == [(27,)]


def test_nightly_extract_retries_while_the_export_is_locked(
    engine: bf.WorkflowEngine, tmp_path: Path
) -> None:
    export = tmp_path / "orders.csv"
    shutil.copy(WORKFLOWS / "data" / "orders.csv", export)
    lock = tmp_path / "orders.csv.lock"
    lock.touch()
    timer = threading.Timer(0.2, lock.unlink)  # the upstream job finishes its export
    timer.start()
    try:
        result = nightly(engine, tmp_path / "out", export)
    finally:
        timer.cancel()
    assert result.status == "completed", result.errors
    assert result.step_records["extract"].attempts >= 2
    assert rows(tmp_path / "out" / "warehouse.db", "SELECT COUNT(*) FROM sales") == [(27,)]


def test_nightly_extract_does_not_retry_a_malformed_export(
    engine: bf.WorkflowEngine, tmp_path: Path
) -> None:
    export = tmp_path / "orders.csv"
    export.write_text("id,when,where\n1,2024-06-01,eu\n")
    result = nightly(engine, tmp_path / "out", export)
    assert result.status == "failed"
    assert result.errors[0]["code"] == "invalid_input"
    assert "expected columns" in result.errors[0]["message"]
    assert result.step_records["extract"].attempts == 1  # invalid_input is not in retry_on
    assert result.steps["transform"] != S.COMPLETED
    assert not (tmp_path / "out" / "nightly_report.md").exists()


def test_nightly_publishes_when_most_regions_load(
    engine: bf.WorkflowEngine, tmp_path: Path
) -> None:
    export = tmp_path / "orders.csv"
    text = (WORKFLOWS / "data" / "orders.csv").read_text()
    export.write_text(text + "o-9001,2024-06-03,latam,kayak,2,2100.00,BRL\n")  # no BRL rate
    result = nightly(engine, tmp_path / "out", export)
    assert result.status == "completed", result.errors
    transform = result.result["transform"]
    assert (transform["successful_steps"], transform["total_steps"]) == (3, 4)
    assert [f["step_id"] for f in transform["failures"]] == ["load_region[2]"]  # apac eu latam na
    assert result.steps["load_region[2]"] == S.FAILED
    db = tmp_path / "out" / "warehouse.db"
    assert rows(db, "SELECT COUNT(*) FROM sales WHERE region = 'latam'") == [(0,)]
    report = (tmp_path / "out" / "nightly_report.md").read_text()
    assert "3 of 4 regions loaded" in report
    assert "`load_region[2]`: latam: no exchange rate for BRL" in report


def test_nightly_deployment_runs_the_definition_with_its_parameters(
    engine: bf.WorkflowEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # deployment paths are relative to the project folder
    loaded = deploy.load(["deployments/nightly-data.yaml"])
    (built,) = deploy.build(loaded, served=True)  # imports the actions, validates the YAML
    assert built.name == "nightly" and built.flow_name == "nightly-data"
    assert {"beluga:definition", "workflow:nightly-data"} <= set(built.tags)
    assert built.schedules[0].schedule.cron == "30 2 * * *"
    spec = loaded[0].spec
    assert built.parameters["input_data"] == spec.parameters
    defn = definition("nightly")
    assert set(spec.parameters) <= set(defn.global_variables)
    result = engine.execute(defn, {**spec.parameters, "out_dir": str(tmp_path)})
    assert result.status == "completed", result.errors
    assert (tmp_path / "nightly_report.md").exists()
