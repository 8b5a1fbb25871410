"""Declarative workflow definitions (API.md §6): the file format, its defaults and
the checks made before anything runs (schema, references, cycles, actions, CEL).

Written from the contract (API.md §6/§7 and the definitions CONTRACT), on the local
provider: no Prefect server is needed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import beluga_flows as bf
from beluga_flows import ErrorCode, OrchestratorError


def noop(data: dict[str, Any]) -> str:
    return "ok"


def engine(**actions: Any) -> bf.WorkflowEngine:
    return bf.WorkflowEngine(actions=actions or {"noop": noop}, provider="local")


def doc(*steps: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"workflow_id": top.pop("workflow_id", "wf"), "steps": list(steps), **top}


def step(step_id: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("action", "noop")
    return {"step_id": step_id, **fields}


def raises(fn: Any) -> OrchestratorError:
    with pytest.raises(OrchestratorError) as info:
        fn()
    return info.value


def problems_of(mapping: dict[str, Any], eng: bf.WorkflowEngine | None = None) -> list[Any]:
    """Every problem the contract reports before a run: from_dict's own (schema) or,
    when the file parses, engine.validate's list (which must not raise)."""
    try:
        defn = bf.WorkflowDefinition.from_dict(mapping)
    except OrchestratorError as err:
        return list(getattr(err, "problems", None) or [err])
    found = (eng or engine()).validate(defn)
    assert isinstance(found, list)
    return found


def only(found: list[Any], code: ErrorCode) -> list[Any]:
    return [p for p in found if p.code is code]


# ------------------------------------------------------------------ format & defaults


def test_defaults_from_the_contract() -> None:
    defn = bf.WorkflowDefinition.from_dict(doc(step("a")))
    assert defn.workflow_id == "wf"
    assert defn.version == "1.0"
    assert defn.timeout == 3600
    assert defn.max_parallel_steps == 10
    assert defn.global_variables in ({}, None)
    s = defn.steps[0]
    assert s.step_id == "a"
    assert s.type == "action"
    assert s.timeout == 300
    assert s.continue_on_failure is False
    assert s.parallel_failure_threshold == 0.5
    assert s.cancel_remaining is False
    assert s.loop_max_iterations == 100
    assert s.on_max_iterations == "fail"
    assert s.on_timeout == "fail"
    assert list(s.dependencies or []) == []
    assert list(s.error_handlers or []) == []
    assert list(s.rollback_actions or []) == []


def test_every_documented_field_is_accepted() -> None:
    mapping = doc(
        step(
            "a",
            name="A",
            input_mapping={"x": "x"},
            output_mapping={"y": "result"},
            conditions=["x > 0"],
            retry_policy={
                "max_attempts": 2,
                "initial_delay": 0.1,
                "max_delay": 1.0,
                "multiplier": 2.0,
                "jitter": 0.0,
                "retry_on": ["execution_failed", "timeout"],
            },
            continue_on_failure=True,
            error_handlers=["noop"],
            rollback_actions=["noop"],
            timeout=1.5,
        ),
        {
            "step_id": "fan",
            "type": "parallel",
            "dependencies": ["a"],
            "for_each": "items",
            "parallel_failure_threshold": 1.0,
            "cancel_remaining": True,
            "parallel_steps": [step("child", input_mapping={"v": "item", "i": "index"})],
        },
        step(
            "spin",
            type="loop",
            dependencies=["fan"],
            loop_condition="iteration < 2",
            loop_max_iterations=5,
            on_max_iterations="continue",
        ),
        {
            "step_id": "ok",
            "type": "approval",
            "dependencies": ["spin"],
            "prompt": "Go?",
            "on_timeout": "approve",
            "timeout": 0.5,
        },
        {
            "step_id": "route",
            "type": "conditional",
            "dependencies": ["ok"],
            "conditions": [{"if": "x > 1", "then": ["big"]}, {"else": ["small"]}],
        },
        step("big"),
        step("small"),
        name="Everything",
        description="all fields",
        version="2.3",
        global_variables={"x": 1, "items": [1, 2]},
        timeout=12.5,
        max_parallel_steps=3,
        retry_policy={"max_attempts": 3},
        sla_targets={"max_duration_s": 10, "steps": {"a": 1.0}},
        tags=["t1", "t2"],
    )
    defn = bf.WorkflowDefinition.from_dict(mapping)
    assert defn.version == "2.3"
    assert defn.timeout == 12.5
    assert defn.max_parallel_steps == 3
    assert [s.step_id for s in defn.steps] == ["a", "fan", "spin", "ok", "route", "big", "small"]
    assert defn.steps[1].parallel_steps[0].step_id == "child"
    assert engine().validate(defn) == []


def test_from_yaml_takes_a_path_and_matches_from_dict(tmp_path: Path) -> None:
    text = (
        "workflow_id: onboarding\n"
        "version: '1.2'\n"
        "global_variables:\n  region: eu\n"
        "steps:\n"
        "  - step_id: fetch\n    action: noop\n"
        "  - step_id: save\n    action: noop\n    dependencies: [fetch]\n"
    )
    path = tmp_path / "onboarding.yaml"
    path.write_text(text)
    from_path = bf.WorkflowDefinition.from_yaml(path)
    from_str = bf.WorkflowDefinition.from_yaml(str(path))
    from_dict = bf.WorkflowDefinition.from_dict(
        {
            "workflow_id": "onboarding",
            "version": "1.2",
            "global_variables": {"region": "eu"},
            "steps": [
                {"step_id": "fetch", "action": "noop"},
                {"step_id": "save", "action": "noop", "dependencies": ["fetch"]},
            ],
        }
    )
    for defn in (from_path, from_str):
        assert defn.workflow_id == "onboarding"
        assert defn.version == "1.2"
        assert [s.step_id for s in defn.steps] == ["fetch", "save"]
        assert list(defn.steps[1].dependencies) == ["fetch"]
    eng = engine()
    hashes = {eng.execute(d, {}).definition_hash for d in (from_path, from_str, from_dict)}
    assert len(hashes) == 1


def test_malformed_yaml_is_invalid_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("workflow_id: x\nsteps: [\n  - step_id: a\n   action: : :\n")
    err = raises(lambda: bf.WorkflowDefinition.from_yaml(path))
    assert err.code is ErrorCode.INVALID_CONFIG


def test_yaml_that_is_not_a_mapping_is_invalid_config(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    assert raises(lambda: bf.WorkflowDefinition.from_yaml(path)).code is ErrorCode.INVALID_CONFIG


def test_missing_yaml_file_raises_an_orchestrator_error(tmp_path: Path) -> None:
    err = raises(lambda: bf.WorkflowDefinition.from_yaml(tmp_path / "nope.yaml"))
    assert err.code in (ErrorCode.NOT_FOUND, ErrorCode.INVALID_CONFIG)


# ------------------------------------------------------------------ schema problems


@pytest.mark.parametrize(
    ("mapping", "path"),
    [
        ({"steps": [step("a")]}, "workflow_id"),
        (doc(), "steps"),
        ({"workflow_id": "wf"}, "steps"),
        (doc(step("a"), bogus=1), "bogus"),
        (doc(step("a", bogus=1)), "steps[0].bogus"),
        (doc(step("a"), {"action": "noop"}), "steps[1].step_id"),
        (doc(step("a"), step("b", type="teleport")), "steps[1].type"),
        (doc(step("a", parallel_failure_threshold=1.5)), "steps[0].parallel_failure_threshold"),
        (doc(step("a", parallel_failure_threshold=-0.1)), "steps[0].parallel_failure_threshold"),
        (doc(step("a", on_max_iterations="explode")), "steps[0].on_max_iterations"),
        (doc(step("a", type="approval", on_timeout="shrug")), "steps[0].on_timeout"),
        (doc(step("a", dependencies="b")), "steps[0].dependencies"),
        (doc(step("a", continue_on_failure="maybe")), "steps[0].continue_on_failure"),
        (doc(step("a", retry_policy={"max_attempts": 2, "bogus": 1})), "steps[0].retry_policy"),
        (doc(step("a"), global_variables=[1, 2]), "global_variables"),
    ],
)
def test_schema_problem_is_invalid_config_with_its_path(mapping: dict[str, Any], path: str) -> None:
    err = raises(lambda: bf.WorkflowDefinition.from_dict(mapping))
    assert err.code is ErrorCode.INVALID_CONFIG
    assert path in str(err), str(err)


def test_every_schema_problem_is_listed_with_its_path() -> None:
    mapping = doc(
        step("a"),
        step("b", bogus=True),
        step("c", parallel_failure_threshold=2),
        {"action": "noop"},
        extra_top=1,
    )
    err = raises(lambda: bf.WorkflowDefinition.from_dict(mapping))
    assert err.code is ErrorCode.INVALID_CONFIG
    text = str(err)
    for path in (
        "extra_top",
        "steps[1].bogus",
        "steps[2].parallel_failure_threshold",
        "steps[3].step_id",
    ):
        assert path in text, (path, text)


def test_schema_problems_in_children_have_their_path() -> None:
    mapping = doc(
        {
            "step_id": "fan",
            "type": "parallel",
            "parallel_steps": [step("c0"), step("c1", surprise=1)],
        }
    )
    err = raises(lambda: bf.WorkflowDefinition.from_dict(mapping))
    assert err.code is ErrorCode.INVALID_CONFIG
    assert "steps[0].parallel_steps[1].surprise" in str(err), str(err)


def test_yaml_schema_problem_lists_the_path(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(
        "workflow_id: w\nsteps:\n  - step_id: a\n    action: noop\n"
        "  - step_id: b\n    action: noop\n  - step_id: c\n    action: noop\n"
        "    parallel_failure_threshold: 3\n"
    )
    err = raises(lambda: bf.WorkflowDefinition.from_yaml(path))
    assert err.code is ErrorCode.INVALID_CONFIG
    assert "steps[2].parallel_failure_threshold" in str(err)


# ------------------------------------------------------------------ reference checks


def test_valid_definition_has_no_problems() -> None:
    eng = engine()
    defn = bf.WorkflowDefinition.from_dict(doc(step("a"), step("b", dependencies=["a"])))
    assert eng.validate(defn) == []


def test_duplicate_step_ids_are_invalid_config() -> None:
    found = problems_of(doc(step("dupe"), step("b"), step("dupe")))
    dup = only(found, ErrorCode.INVALID_CONFIG)
    assert dup and any("dupe" in str(p) for p in dup), found


def test_duplicate_step_id_between_a_child_and_a_top_level_step() -> None:
    mapping = doc(
        step("x"),
        {"step_id": "fan", "type": "parallel", "parallel_steps": [step("x"), step("y")]},
    )
    dup = only(problems_of(mapping), ErrorCode.INVALID_CONFIG)
    assert dup and any("x" in str(p) for p in dup)


def test_duplicate_step_id_between_two_children() -> None:
    mapping = doc(
        {"step_id": "f1", "type": "parallel", "parallel_steps": [step("k")]},
        {"step_id": "f2", "type": "parallel", "parallel_steps": [step("k")]},
    )
    dup = only(problems_of(mapping), ErrorCode.INVALID_CONFIG)
    assert dup and any("k" in str(p) for p in dup)


def test_unknown_dependency_is_not_found_naming_it_with_its_path() -> None:
    found = problems_of(doc(step("a"), step("b"), step("c", dependencies=["a", "ghost"])))
    nf = only(found, ErrorCode.NOT_FOUND)
    assert len(nf) == 1, found
    text = str(nf[0])
    assert "ghost" in text
    assert "steps[2].dependencies" in text


def test_unknown_branch_target_is_not_found_naming_it() -> None:
    mapping = doc(
        step("a"),
        {
            "step_id": "route",
            "type": "conditional",
            "conditions": [{"if": "true", "then": ["a"]}, {"else": ["phantom"]}],
        },
    )
    nf = only(problems_of(mapping), ErrorCode.NOT_FOUND)
    assert nf and any("phantom" in str(p) for p in nf), nf


def test_cycle_is_workflow_deadlock_naming_a_step_of_it() -> None:
    mapping = doc(
        step("start"),
        step("a", dependencies=["start", "c"]),
        step("b", dependencies=["a"]),
        step("c", dependencies=["b"]),
    )
    dl = only(problems_of(mapping), ErrorCode.WORKFLOW_DEADLOCK)
    assert dl, problems_of(mapping)
    assert any(re.search(r"\b(a|b|c)\b", str(p)) for p in dl)
    assert not any("'start'" in str(p) for p in dl)


def test_self_dependency_is_a_cycle() -> None:
    dl = only(problems_of(doc(step("solo", dependencies=["solo"]))), ErrorCode.WORKFLOW_DEADLOCK)
    assert dl and "solo" in str(dl[0])


def test_unknown_action_is_not_found_naming_action_and_step() -> None:
    found = problems_of(doc(step("a"), step("b", action="does_not_exist")))
    nf = only(found, ErrorCode.NOT_FOUND)
    assert len(nf) == 1, found
    assert "does_not_exist" in str(nf[0]) and "b" in str(nf[0])
    assert "steps[1]" in str(nf[0])


def test_unknown_error_handler_and_rollback_actions_are_not_found() -> None:
    found = problems_of(doc(step("a", error_handlers=["nohandler"], rollback_actions=["noundo"])))
    text = " | ".join(str(p) for p in only(found, ErrorCode.NOT_FOUND))
    assert "nohandler" in text and "noundo" in text


def test_unknown_action_in_a_child_step() -> None:
    mapping = doc(
        {"step_id": "fan", "type": "parallel", "parallel_steps": [step("kid", action="nope")]}
    )
    nf = only(problems_of(mapping), ErrorCode.NOT_FOUND)
    assert nf and "nope" in str(nf[0]) and "kid" in str(nf[0])


def test_engine_actions_mapping_replaces_the_registry() -> None:
    name = "model_test_registered_only"
    bf.register_action(name, noop)
    try:
        found = problems_of(doc(step("a", action=name)), engine(other=noop))
        nf = only(found, ErrorCode.NOT_FOUND)
        assert nf and name in str(nf[0])
        # the registry is used when no mapping is given
        reg = bf.WorkflowEngine(actions=None, provider="local")
        assert reg.validate(bf.WorkflowDefinition.from_dict(doc(step("a", action=name)))) == []
    finally:
        from beluga_flows.definitions.actions import unregister_action

        unregister_action(name)


def test_action_registry_rejects_a_taken_name() -> None:
    from beluga_flows.definitions.actions import unregister_action

    @bf.action("model_test_taken")
    def first(data: dict[str, Any]) -> int:
        return 1

    try:
        err = raises(lambda: bf.register_action("model_test_taken", noop))
        assert err.code is ErrorCode.INVALID_CONFIG
        with pytest.raises(OrchestratorError) as info:

            @bf.action("model_test_taken")
            def second(data: dict[str, Any]) -> int:
                return 2

        assert info.value.code is ErrorCode.INVALID_CONFIG
    finally:
        unregister_action("model_test_taken")


def test_bare_action_decorator_uses_the_function_name() -> None:
    from beluga_flows.definitions.actions import unregister_action

    @bf.action
    def model_test_bare(data: dict[str, Any]) -> str:
        return "bare"

    try:
        reg = bf.WorkflowEngine(actions=None, provider="local")
        res = reg.execute(
            bf.WorkflowDefinition.from_dict(doc(step("a", action="model_test_bare"))), {}
        )
        assert res.status == "completed"
        assert res.result["a"] == "bare"
    finally:
        unregister_action("model_test_bare")


@pytest.mark.parametrize(
    ("fields", "expr"),
    [
        ({"conditions": ["amount >"]}, "amount >"),
        ({"input_mapping": {"x": "1 +* 2"}}, "1 +* 2"),
        ({"output_mapping": {"y": "result.("}}, "result.("),
        ({"type": "loop", "loop_condition": "iteration <<< 3"}, "iteration <<< 3"),
    ],
)
def test_expression_that_does_not_compile_is_invalid_config(
    fields: dict[str, Any], expr: str
) -> None:
    found = problems_of(doc(step("first"), step("broken", dependencies=["first"], **fields)))
    bad = only(found, ErrorCode.INVALID_CONFIG)
    assert len(bad) == 1, found
    assert "broken" in str(bad[0]) and expr in str(bad[0])
    assert "steps[1]" in str(bad[0])


def test_bad_for_each_and_branch_expressions_are_invalid_config() -> None:
    mapping = doc(
        {"step_id": "fan", "type": "parallel", "for_each": "items[", "parallel_steps": [step("k")]},
        {"step_id": "route", "type": "conditional", "conditions": [{"if": "x ==", "then": ["z"]}]},
        step("z"),
    )
    bad = only(problems_of(mapping), ErrorCode.INVALID_CONFIG)
    text = " | ".join(str(p) for p in bad)
    assert "items[" in text and "fan" in text
    assert "x ==" in text and "route" in text


def test_validate_lists_every_problem_without_raising() -> None:
    defn = bf.WorkflowDefinition.from_dict(
        doc(
            step("a", action="missing_action"),
            step("b", dependencies=["ghost"]),
            step("c", conditions=["1 +"]),
            step("d", dependencies=["e"]),
            step("e", dependencies=["d"]),
        )
    )
    found = engine().validate(defn)
    codes = {p.code for p in found}
    assert {ErrorCode.NOT_FOUND, ErrorCode.INVALID_CONFIG, ErrorCode.WORKFLOW_DEADLOCK} <= codes
    assert all(isinstance(p, OrchestratorError) for p in found)
    text = " | ".join(str(p) for p in found)
    for needle in ("missing_action", "ghost", "1 +"):
        assert needle in text
    assert all(re.search(r"steps\[\d\]", str(p)) for p in found), text


def test_execute_raises_one_error_listing_every_problem() -> None:
    calls: list[str] = []

    def record(data: dict[str, Any]) -> None:
        calls.append("ran")

    defn = bf.WorkflowDefinition.from_dict(
        doc(step("ok", action="record"), step("a", action="nope_one"), step("b", action="nope_two"))
    )
    eng = bf.WorkflowEngine(actions={"record": record}, provider="local")
    err = raises(lambda: eng.execute(defn, {}))
    assert err.code is ErrorCode.NOT_FOUND
    assert "nope_one" in str(err) and "nope_two" in str(err)
    assert len(err.problems) == 2
    assert calls == []


async def test_aexecute_raises_the_same_way() -> None:
    defn = bf.WorkflowDefinition.from_dict(doc(step("a", dependencies=["zz"])))
    with pytest.raises(OrchestratorError) as info:
        await engine().aexecute(defn, {})
    assert info.value.code is ErrorCode.NOT_FOUND and "zz" in str(info.value)


def test_first_problem_decides_the_code() -> None:
    defn = bf.WorkflowDefinition.from_dict(
        doc(step("a", conditions=["(("]), step("b", action="nope"))
    )
    eng = engine()
    found = eng.validate(defn)
    assert len(found) == 2
    err = raises(lambda: eng.execute(defn, {}))
    assert err.code is found[0].code
    assert len(err.problems) == 2


# ------------------------------------------------------------------ schema & hash


def test_json_schema_describes_the_file_format() -> None:
    schema = bf.WorkflowDefinition.json_schema()
    assert isinstance(schema, dict)
    text = json.dumps(schema)
    assert "workflow_id" in schema.get("properties", {})
    assert "steps" in schema.get("properties", {})
    assert {"workflow_id", "steps"} <= set(schema.get("required", []))
    for field in (
        "step_id",
        "parallel_failure_threshold",
        "loop_max_iterations",
        "on_timeout",
        "for_each",
    ):
        assert field in text
    # unknown fields are errors: the schema says so too
    assert '"additionalProperties": false' in text


def test_definition_hash_is_stable_and_changes_with_the_definition() -> None:
    eng = engine()
    base = doc(step("a"), step("b", dependencies=["a"]), global_variables={"x": 1, "y": 2})
    r1 = eng.execute(bf.WorkflowDefinition.from_dict(base), {"in": 1})
    r2 = eng.execute(bf.WorkflowDefinition.from_dict(json.loads(json.dumps(base))), {"in": 2})
    assert re.fullmatch(r"[0-9a-f]{64}", r1.definition_hash)
    assert r1.definition_hash == r2.definition_hash  # input is not part of it
    reordered = {
        "global_variables": {"y": 2, "x": 1},
        "steps": [
            {"dependencies": ["a"], "step_id": "b", "action": "noop"},
            {"action": "noop", "step_id": "a"},
        ][::-1],
        "workflow_id": "wf",
    }
    r3 = eng.execute(bf.WorkflowDefinition.from_dict(reordered), {})
    assert r3.definition_hash == r1.definition_hash  # canonical: key order does not matter
    changed = doc(
        step("a"), step("b", dependencies=["a"], timeout=5), global_variables={"x": 1, "y": 2}
    )
    r4 = eng.execute(bf.WorkflowDefinition.from_dict(changed), {})
    assert r4.definition_hash != r1.definition_hash
    bumped = dict(base, version="1.1")
    assert (
        eng.execute(bf.WorkflowDefinition.from_dict(bumped), {}).definition_hash
        != r1.definition_hash
    )


# ------------------------------------------------------------------ more structural checks


@pytest.mark.parametrize(
    ("mapping", "needle"),
    [
        (doc(step("a", timeout=0)), "steps[0].timeout"),
        (doc(step("a", timeout=-1)), "steps[0].timeout"),
        (doc(step("a"), timeout=0), "timeout"),
        (doc(step("a"), max_parallel_steps=0), "max_parallel_steps"),
        (
            doc(step("a", type="loop", loop_condition="true", loop_max_iterations=0)),
            "steps[0].loop_max_iterations",
        ),
        (doc(step("a", retry_policy={"max_attempts": 0})), "steps[0].retry_policy"),
        (
            doc(step("a", retry_policy={"retry_on": ["no_such_code"]})),
            "steps[0].retry_policy.retry_on[0]",
        ),
    ],
)
def test_nonsense_values_are_invalid_config(mapping: dict[str, Any], needle: str) -> None:
    bad = only(problems_of(mapping), ErrorCode.INVALID_CONFIG)
    assert bad and any(needle in str(p) for p in bad), bad


def test_an_action_step_needs_an_action() -> None:
    found = problems_of(doc(step("a"), {"step_id": "lonely"}))
    assert found and any("lonely" in str(p) or "steps[1]" in str(p) for p in found), found
    assert {p.code for p in found} <= {ErrorCode.INVALID_CONFIG, ErrorCode.NOT_FOUND}


def test_parallel_needs_children_and_for_each_a_single_child() -> None:
    empty = problems_of(doc({"step_id": "fan", "type": "parallel"}))
    assert only(empty, ErrorCode.INVALID_CONFIG), empty
    two = problems_of(
        doc(
            {
                "step_id": "fan",
                "type": "parallel",
                "for_each": "items",
                "parallel_steps": [step("k1"), step("k2")],
            }
        )
    )
    assert only(two, ErrorCode.INVALID_CONFIG), two


def test_conditional_has_at_most_one_else() -> None:
    mapping = doc(
        {
            "step_id": "route",
            "type": "conditional",
            "conditions": [{"else": ["a"]}, {"else": ["b"]}],
        },
        step("a"),
        step("b"),
    )
    bad = only(problems_of(mapping), ErrorCode.INVALID_CONFIG)
    assert bad and any("steps[0]" in str(p) for p in bad), bad


def test_conditional_branch_with_unknown_keys_is_invalid() -> None:
    mapping = doc(
        {
            "step_id": "route",
            "type": "conditional",
            "conditions": [{"if": "true", "then": ["a"], "otherwise": 1}],
        },
        step("a"),
    )
    assert only(problems_of(mapping), ErrorCode.INVALID_CONFIG)


def test_a_branch_back_to_an_ancestor_is_a_cycle() -> None:
    mapping = doc(
        step("a"),
        {
            "step_id": "route",
            "type": "conditional",
            "dependencies": ["a"],
            "conditions": [{"if": "true", "then": ["a"]}],
        },
    )
    dl = only(problems_of(mapping), ErrorCode.WORKFLOW_DEADLOCK)
    assert dl and any("a" in str(p) or "route" in str(p) for p in dl), problems_of(mapping)


def test_sla_target_naming_no_step_is_reported() -> None:
    found = problems_of(
        doc(step("a"), sla_targets={"max_duration_s": 5, "steps": {"ghost_step": 1}})
    )
    assert found and any("ghost_step" in str(p) for p in found), found
    assert {p.code for p in found} <= {ErrorCode.NOT_FOUND, ErrorCode.INVALID_CONFIG}
