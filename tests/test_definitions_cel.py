"""CEL expressions in declarative workflows (API.md §6): what they see, and that
neither hostile data nor hostile expressions ever run code or hang.

Every hostile case runs in a daemon thread joined with a bound, so a hang fails
the test instead of freezing the session.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

import beluga_flows as bf
from beluga_flows import ErrorCode, OrchestratorError

LIMIT = 10.0  # seconds for any single hostile attempt


def doc(*steps: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"workflow_id": top.pop("workflow_id", "cel"), "steps": list(steps), **top}


def make(**actions: Any) -> bf.WorkflowEngine:
    return bf.WorkflowEngine(actions=actions, provider="local")


def echo(v: Any) -> Any:
    return v


def whole(data: dict[str, Any]) -> dict[str, Any]:
    return dict(data)


# ------------------------------------------------------------------ what expressions see


def test_expressions_see_data_input_and_steps() -> None:
    def fetch(data: dict[str, Any]) -> dict[str, Any]:
        return {"a": 2, "b": 3, "customer": {"name": "ana", "email": "a@x"}}

    mapping = doc(
        {
            "step_id": "fetch",
            "action": "fetch",
            "output_mapping": {"amount": "result.a * 10", "c": "result.customer"},
        },
        {
            "step_id": "calc",
            "action": "whole",
            "dependencies": ["fetch"],
            "output_mapping": {
                "summary": '{"total": amount + 1, "tags": [c.name, region]}',
                "size_ok": "size(items) == 3",
                "size_label": 'amount > 10 ? "big" : "small"',
                "in_list": '"eu" in regions',
                "has_email": "has(c.email) && !has(c.phone)",
                "prefix": 'c.name.startsWith("an")',
                "original": "input.amount",
                "through_data": "data.amount",
                "fetch_status": "steps.fetch.status",
                "fetch_attempts": "steps.fetch.attempts",
                "half": "double(amount) / 4.0",
                "sum_items": "items[0] + items[1] + items[2]",
            },
        },
        global_variables={"region": "eu", "regions": ["eu", "us"], "items": [1, 2, 3]},
    )
    res = make(fetch=fetch, whole=whole).execute(
        bf.WorkflowDefinition.from_dict(mapping), {"amount": 1}
    )
    assert res.status == "completed", res.errors
    out = res.result
    assert out["amount"] == 20
    assert out["summary"] == {"total": 21, "tags": ["ana", "eu"]}
    assert out["size_ok"] is True
    assert out["size_label"] == "big"
    assert out["in_list"] is True
    assert out["has_email"] is True
    assert out["prefix"] is True
    assert out["original"] == 1
    assert out["through_data"] == 20
    assert out["fetch_status"] == "completed"
    assert out["fetch_attempts"] == 1
    assert out["half"] == 5.0
    assert out["sum_items"] == 6
    # values coming out of CEL are plain JSON-able Python values
    assert type(out["summary"]["total"]) is int and type(out["half"]) is float
    json.dumps(res.to_dict())


def test_a_bound_name_shadows_a_data_key() -> None:
    def produce(data: dict[str, Any]) -> str:
        return "the-output"

    seen: list[tuple[Any, Any]] = []

    def child(it: Any, ix: Any) -> None:
        seen.append((it, ix))

    mapping = doc(
        {
            "step_id": "p",
            "action": "produce",
            "output_mapping": {"got": "result", "old": "data.result"},
        },
        {
            "step_id": "fan",
            "type": "parallel",
            "dependencies": ["p"],
            "for_each": "things",
            "parallel_steps": [
                {"step_id": "k", "action": "child", "input_mapping": {"it": "item", "ix": "index"}}
            ],
        },
        global_variables={
            "result": "from-data",
            "item": "data-item",
            "index": "data-index",
            "things": ["t0", "t1"],
        },
    )
    res = make(produce=produce, child=child).execute(bf.WorkflowDefinition.from_dict(mapping), {})
    assert res.status == "completed", res.errors
    assert res.result["got"] == "the-output"
    assert res.result["old"] == "from-data"
    assert sorted(seen) == [("t0", 0), ("t1", 1)]


def test_python_syntax_is_not_cel() -> None:
    for expr in ("1 if True else 2", "[x for x in items]", "lambda: 1", "import os"):
        mapping = doc({"step_id": "s", "action": "echo", "input_mapping": {"v": expr}})
        kind, value = attempt(mapping, {"echo": echo}, {"items": [1]})
        assert kind == "rejected", (expr, kind, value)
        assert value.code is ErrorCode.INVALID_CONFIG and expr in str(value)


# ------------------------------------------------------------------ hostile data values


def _payloads(marker: Path) -> list[str]:
    return [
        f"__import__('os').system('touch {marker}')",
        f"open('{marker}', 'w').write('x')",
        f'" + __import__("os").system("touch {marker}") + "',
        f"' + __import__('os').system('touch {marker}') + '",
        "'); drop table users; --",
        '"); drop table users; --',
        "{{7*7}}",
        "${7*7}",
        "#{7*7}",
        "<%= 7*7 %>",
        "1 + 1",
        "data",
        "true",
        "input.p",
        "\x00\n\r\t unicode ü 😀 \\ \\n",
    ]


def test_hostile_data_values_are_plain_strings(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    received: list[Any] = []

    def record(v: Any, w: Any) -> Any:
        received.append((v, w))
        return v

    def keep(data: dict[str, Any]) -> Any:
        received.append(("whole", data["p"]))
        return data["p"]

    for payload in _payloads(marker):
        received.clear()
        mapping = doc(
            {
                "step_id": "echo",
                "action": "record",
                "input_mapping": {"v": "p", "w": "input.p + ''"},
                "conditions": ["p == input.p", "size(p) > 0", "p == data.p"],
                "output_mapping": {"out": "result", "again": "p", "nested": '{"k": [p]}'},
            },
            {"step_id": "whole", "action": "keep", "dependencies": ["echo"]},
            global_variables={"g": payload},
        )
        res = make(record=record, keep=keep).execute(
            bf.WorkflowDefinition.from_dict(mapping), {"p": payload}
        )
        assert res.status == "completed", (payload, res.errors)
        assert received == [(payload, payload), ("whole", payload)], payload
        assert res.result["out"] == payload
        assert res.result["again"] == payload
        assert res.result["nested"] == {"k": [payload]}
        assert res.result["g"] == payload and res.result["whole"] == payload
        assert not marker.exists(), payload


def test_hostile_values_returned_by_an_action_are_plain_strings(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payloads = _payloads(marker)

    def produce(data: dict[str, Any]) -> list[str]:
        return payloads

    seen: list[Any] = []
    mapping = doc(
        {
            "step_id": "p",
            "action": "produce",
            "output_mapping": {"vals": "result", "first": "result[0]"},
        },
        {
            "step_id": "fan",
            "type": "parallel",
            "dependencies": ["p"],
            "for_each": "vals",
            "parallel_steps": [
                {
                    "step_id": "k",
                    "action": "take",
                    "input_mapping": {"v": "item"},
                    "conditions": ["item == vals[index]"],
                }
            ],
        },
    )
    res = make(produce=produce, take=lambda v: seen.append(v) or v).execute(
        bf.WorkflowDefinition.from_dict(mapping), {}
    )
    assert res.status == "completed", res.errors
    assert sorted(seen) == sorted(payloads)
    assert res.result["first"] == payloads[0]
    assert res.result["fan"]["results"] == {f"k[{i}]": p for i, p in enumerate(payloads)}
    assert not marker.exists()


def test_data_keys_that_are_not_identifiers() -> None:
    weird = {"a-b": 1, "x y": 2, "__class__": 3, "__import__": 4, "1st": 5, "ünï": 6, "ok": 7}
    mapping = doc(
        {"step_id": "s", "action": "echo", "input_mapping": {"v": "ok + data['a-b'] + data['x y']"}}
    )
    res = make(echo=echo).execute(bf.WorkflowDefinition.from_dict(mapping), weird)
    assert res.status == "completed", res.errors
    assert res.result["s"] == 10
    for key, value in weird.items():
        assert res.result[key] == value


# ------------------------------------------------------------------ hostile expressions


def attempt(
    mapping: dict[str, Any], actions: dict[str, Any], data: dict[str, Any]
) -> tuple[str, Any]:
    """Load, validate and run in a daemon thread, bounded by LIMIT.

    Returns ("rejected", OrchestratorError) when a check before the run refused it,
    ("ran", ExecutionResult) when it ran, ("crashed", exception) for anything else."""
    box: dict[str, tuple[str, Any]] = {}

    def target() -> None:
        try:
            defn = bf.WorkflowDefinition.from_dict(mapping)
            eng = bf.WorkflowEngine(actions=actions, provider="local")
            found = eng.validate(defn)
            if found:
                assert all(isinstance(p, OrchestratorError) for p in found)
                try:
                    eng.execute(defn, data)
                except OrchestratorError as err:
                    assert err.code is found[0].code
                    box["out"] = ("rejected", found[0])
                    return
                box["out"] = ("crashed", AssertionError("validate found problems but execute ran"))
                return
            box["out"] = ("ran", eng.execute(defn, data))
        except OrchestratorError as err:
            box["out"] = ("rejected", err)
        except BaseException as err:  # reported by the test
            box["out"] = ("crashed", err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(LIMIT)
    assert not thread.is_alive(), f"hung for more than {LIMIT}s"
    return box["out"]


def _assert_refused(kind: str, value: Any, sid: str = "s") -> None:
    assert kind != "crashed", repr(value)
    if kind == "rejected":
        assert value.code is ErrorCode.INVALID_CONFIG, value
        return
    res = value
    assert res.status == "failed", (res.status, res.result)
    record = res.step_records[sid]
    assert record.status == "failed", record
    assert record.error is not None
    ErrorCode(record.error["code"])  # a real code
    assert record.error["message"]
    assert any(e["step_id"] == sid for e in res.errors)


def _hostile(marker: Path) -> list[str]:
    return [
        f'__import__("os").system("touch {marker}")',
        f'open("{marker}", "w")',
        "data.__class__.__mro__",
        "data.__class__.__init__.__globals__",
        "input.__dict__",
        "steps.__globals__",
        'data["__class__"]',
        '"x".__class__',
        '"abc".upper()',
        "__builtins__",
        "eval('1')",
        "9223372036854775807 * 2",
        "9223372036854775807 + 1",
        "-9223372036854775807 - 2",
        "1" + "0" * 400,
        "1 / 0",
        "(" * 10_000 + "1" + ")" * 10_000,
    ]


@pytest.mark.parametrize("place", ["input_mapping", "output_mapping", "conditions"])
def test_hostile_expressions_never_run_code(tmp_path: Path, place: str) -> None:
    marker = tmp_path / "pwned"
    calls: list[Any] = []

    def act(**kwargs: Any) -> str:
        calls.append(kwargs)
        return "acted"

    failures: list[str] = []
    for expr in _hostile(marker):
        calls.clear()
        s: dict[str, Any] = {"step_id": "s", "action": "act"}
        if place == "input_mapping":
            s["input_mapping"] = {"v": expr}
        elif place == "output_mapping":
            s["input_mapping"] = {"v": "1"}
            s["output_mapping"] = {"o": expr}
        else:
            s["input_mapping"] = {"v": "1"}
            s["conditions"] = [expr]
        kind, value = attempt(doc(s), {"act": act}, {"x": 1})
        try:
            _assert_refused(kind, value)
            if place != "output_mapping":
                assert calls == [], calls  # the action never saw a value from it
        except AssertionError as err:
            failures.append(f"{expr[:60]!r}: {err}")
        assert not marker.exists(), expr
    assert failures == [], "\n".join(failures)


def test_hostile_loop_and_for_each_expressions(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    failures: list[str] = []
    for expr in _hostile(marker):
        for s in (
            {"step_id": "s", "type": "loop", "action": "act", "loop_condition": expr},
            {
                "step_id": "s",
                "type": "parallel",
                "for_each": expr,
                "parallel_steps": [{"step_id": "k", "action": "act"}],
            },
        ):
            kind, value = attempt(doc(s), {"act": lambda data: "acted"}, {})
            try:
                _assert_refused(kind, value)
            except AssertionError as err:
                failures.append(f"{s.get('type')} {expr[:60]!r}: {err}")
            assert not marker.exists(), expr
    assert failures == [], "\n".join(failures)


def test_hostile_branch_condition(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    calls: list[str] = []
    for expr in (
        f'__import__("os").system("touch {marker}")',
        "data.__class__",
        "9223372036854775807 * 2",
    ):
        mapping = doc(
            {
                "step_id": "s",
                "type": "conditional",
                "conditions": [{"if": expr, "then": ["t"]}, {"else": ["e"]}],
            },
            {"step_id": "t", "action": "act"},
            {"step_id": "e", "action": "act"},
        )
        kind, value = attempt(mapping, {"act": lambda data: calls.append("acted")}, {})
        _assert_refused(kind, value)
        assert calls == []
        assert not marker.exists()


@pytest.mark.parametrize("size", [10_000, 200_000])
def test_very_long_expressions_are_bounded(size: int) -> None:
    """A long but legal expression may be refused or computed; never a hang or a crash."""
    terms = size // 4
    cases = {
        "sum": (" + ".join(["1"] * terms), terms),
        "and": (" && ".join(["true"] * terms), True),
        "string": ('"' + "a" * size + '"', "a" * size),
        "list": ("[" + ",".join(["1"] * terms) + "]", [1] * terms),
        "nested_lists": ("[" * (size // 20) + "]" * (size // 20), None),
        "negations": ("-" * (size // 10) + "1", 1),
        "nots": ("!" * (size // 10) + "true", True),
    }
    for name, (expr, expected) in cases.items():
        kind, value = attempt(
            doc({"step_id": "s", "action": "echo", "input_mapping": {"v": expr}}),
            {"echo": echo},
            {},
        )
        assert kind != "crashed", (name, repr(value))
        if kind == "ran" and value.status == "completed":
            if expected is not None:
                assert value.result["s"] == expected, name
        else:
            _assert_refused(kind, value)


def test_a_failed_expression_at_run_time_is_a_clear_error_naming_the_step() -> None:
    mapping = doc(
        {"step_id": "ok", "action": "echo", "input_mapping": {"v": "1"}},
        {
            "step_id": "overflow",
            "action": "echo",
            "dependencies": ["ok"],
            "input_mapping": {"v": "big * 2"},
        },
    )
    kind, value = attempt(mapping, {"echo": echo}, {"big": 9223372036854775807})
    assert kind == "ran", value
    assert value.status == "failed"
    assert value.steps["ok"] == "completed"
    err = value.step_records["overflow"].error
    assert err is not None and err["message"]
    entry = next(e for e in value.errors if e["step_id"] == "overflow")
    assert entry["code"] == err["code"]


def test_numbers_in_data_round_trip_or_fail_clearly() -> None:
    """CEL ints are 64-bit: a bigger int in data must arrive unchanged or fail the
    step; it must never turn silently into a (rounded) float."""
    big = 2**70 + 1
    for value in (big, -big, 2**63, 9223372036854775807, 1.5, -0.0):
        mapping = doc({"step_id": "s", "action": "echo", "input_mapping": {"v": "n"}})
        res = make(echo=echo).execute(bf.WorkflowDefinition.from_dict(mapping), {"n": value})
        if res.status == "completed":
            got = res.result["s"]
            assert type(got) is type(value) and got == value, (value, got)
        else:
            _assert_refused("ran", res)
