"""The enterprise orchestrator: a durable workflow whose body is a graph.

An ``orchestrator`` node asks the analyst agent for the task's features and picks a
strategy (:func:`choose_strategy`, a pure function); conditional edges send the run
to one of five nodes, each of which ends the graph:

* ``parallel_executor`` — the task lists several sub-tasks: they run in parallel
  (``bf.scatter_gather``, one worker agent per sub-task);
* ``conditional_router`` — a ticket: a triage agent picks a desk (``bf.Router``);
* ``react_agent`` ⇄ ``tools`` — a question: a reason/act loop over local tools
  (arithmetic, search and counting in ``flows/data/corpus``), stopped after
  ``max_react_steps`` actions;
* ``human_approval`` — a risky change: the node asks for approval
  (``bf.request_approval``) and carries out the plan only if approved;
* ``error_recovery`` — the agent is unavailable (retries exhausted, breaker open) or
  the task is unusable: a degraded answer from local analysis.

Every "agent" call is the ``agent`` step, guarded by a circuit breaker and a retry
policy. Every decision (strategy, desk, tool, approval, recovery) is counted on the
OpenTelemetry meter ``beluga_flows.examples`` (``orchestrator.decisions``, attributes
``node``, ``choice`` and ``strategy``) and written as a table to the run's artifacts
(``orchestrator-decisions``). Everything is local: no network, no model.

Run it against a server (``beluga-flows server``, or the one ``make demo`` started)
and approve a risky task from another terminal; ``workflow start`` hosts the run, so
it stays in the background until the run ends (or serve the workflow with
``beluga-flows workflow serve flows/enterprise_orchestrator.py:enterprise``)::

    beluga-flows workflow start flows/enterprise_orchestrator.py:enterprise --id ent-1 \\
        --param task="Deploy release 4.2 to production; delete the staging database" &
    beluga-flows workflow query ent-1 status          # "paused": it asks for approval
    beluga-flows workflow signal ent-1 approval \\
        --data '{"approved": true, "reviewer": "ana", "comment": "go"}'
    beluga-flows workflow result ent-1                # {"strategy": "approval", ...}
    beluga-flows workflow query ent-1 steps           # the node executions and agent calls

``PREFECT_API_URL=http://127.0.0.1:4200/api python flows/enterprise_orchestrator.py``
runs one task for each route that needs no reviewer (``EXAMPLES``), in this process.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry import metrics

import beluga_flows as bf

CORPUS = Path(__file__).parent / "data" / "corpus"
MAX_TASK_CHARS = 4000
RISK_TERMS = ("deploy", "production", "delete", "drop", "refund", "transfer", "payment")
DESKS = {
    "billing": ("invoice", "bill", "billed", "charge", "charged", "price", "cost"),
    "technical": ("error", "timeout", "retry", "crash", "bug", "slow", "fails", "hang"),
}
_STOP = (
    "a about all an and any are can company do does explain explains for from how i in is it "
    "me of on or our please tell that the this to what when where which who why with doc "
    "docs document documents discuss discusses mention mentions many times appear appears"
)
STOPWORDS = frozenset(_STOP.split())
ROUTES = {
    "parallel": "parallel_executor",
    "conditional": "conditional_router",
    "react": "react_agent",
    "approval": "human_approval",
    "error_recovery": "error_recovery",
}

# The guards of every agent call: three attempts for transient failures, and a
# breaker that fails fast once the agent has failed three calls in a row.
AGENT_RECOVERY_S = 30.0
AGENT_BREAKER = bf.CircuitBreaker(
    "enterprise-agent", failure_threshold=3, recovery_timeout=AGENT_RECOVERY_S
)
AGENT_RETRY = bf.RetryPolicy(
    max_attempts=3, initial_delay=0.05, max_delay=0.5, jitter=0.0, retry_on=bf.is_retryable
)
_decisions = metrics.get_meter("beluga_flows.examples").create_counter(
    "orchestrator.decisions", description="decisions taken by the enterprise orchestrator"
)


# -- local "skills": the work the agents do -------------------------------------------


def _docs() -> dict[str, str]:
    return {p.stem: " ".join(p.read_text().split()) for p in sorted(CORPUS.glob("*.md"))}


def _terms(text: str) -> list[str]:
    words = re.findall(r"[a-z][a-z-]+", text.lower())
    return [w for w in dict.fromkeys(words) if w not in STOPWORDS and len(w) > 3]


_EXPR = re.compile(r"\d+(?:\.\d+)?(?:[ \t]*[-+*/][ \t]*\d+(?:\.\d+)?)+")
_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def calc(expression: str) -> float:
    """Evaluate ``+ - * /`` arithmetic on numbers, without ``eval``."""

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return float(_OPS[type(node.op)](ev(node.left), ev(node.right)))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        raise ValueError(f"not arithmetic: {expression!r}")

    return ev(ast.parse(expression, mode="eval").body)


def search(term: str) -> dict[str, Any]:
    """The corpus document that mentions ``term`` most, with its first such sentence."""
    counts = {doc: text.lower().count(term) for doc, text in _docs().items()}
    doc, hits = max(counts.items(), key=operator.itemgetter(1))
    if not hits:
        return {"term": term, "doc": None, "hits": 0, "evidence": ""}
    sentences = re.split(r"(?<=[.!?])\s", _docs()[doc])
    evidence = next((s for s in sentences if term in s.lower()), "")
    return {"term": term, "doc": doc, "hits": hits, "evidence": evidence[:200]}


def count(term: str) -> int:
    """How often ``term`` occurs in the whole corpus."""
    return sum(text.lower().count(term) for text in _docs().values())


def split_subtasks(task: str) -> list[str]:
    """Bullet lines, numbered lines or ``;``-separated parts of a task."""
    parts = [re.sub(r"^\s*(?:[-*]|\d+[.)])\s*", "", p).strip() for p in re.split(r"\n|;", task)]
    return [p for p in parts if p]


def analyse(task: str) -> dict[str, Any]:
    """The features the strategy is chosen from (the analyst agent's skill)."""
    lowered = task.lower()
    words = re.findall(r"[a-z0-9'-]+", lowered)
    return {
        "chars": len(task),
        "words": len(words),
        "subtasks": split_subtasks(task),
        "expressions": _EXPR.findall(task),
        "question": "?" in task or (bool(words) and words[0] in {"what", "which", "how"}),
        "risk_terms": [t for t in RISK_TERMS if re.search(rf"\b{t}", lowered)],
        "terms": _terms(task)[:12],
    }


def choose_strategy(features: dict[str, Any]) -> tuple[str, str]:
    """The strategy for a task with these features, and why (a pure function)."""
    if not features["words"]:
        return "error_recovery", "the task is empty"
    if features["chars"] > MAX_TASK_CHARS:
        return "error_recovery", f"the task is longer than {MAX_TASK_CHARS} characters"
    if features["risk_terms"]:
        return "approval", f"risky terms: {', '.join(features['risk_terms'])}"
    if len(features["subtasks"]) > 1:
        return "parallel", f"{len(features['subtasks'])} independent sub-tasks"
    if features["question"] or features["expressions"]:
        return "react", "a question that needs tools"
    return "conditional", "a ticket for a desk"


def next_action(question: str, scratchpad: list[dict[str, Any]]) -> tuple[str, str]:
    """The reasoner's skill: the next ``(tool, argument)``, or ``("finish", "")``."""
    plan = [("calc", e) for e in _EXPR.findall(question)]
    counted = re.search(r"how (?:many times|often) (?:does |is )?['\"]?([a-z-]+)", question.lower())
    if counted:
        plan.append(("count", counted.group(1)))
    skip = {counted.group(1)} if counted else set()
    plan += [
        ("search", t) for t in _terms(question) if t not in skip and t not in {"many", "times"}
    ]
    done = {(s["tool"], s["arg"]) for s in scratchpad}
    return next((a for a in plan if a not in done), ("finish", ""))


def triage(task: str) -> str:
    """The desk a ticket belongs to (the triage agent's skill)."""
    words = set(re.findall(r"[a-z]+", task.lower()))
    scores = {desk: len(words & set(keys)) for desk, keys in DESKS.items()}
    desk, score = max(scores.items(), key=operator.itemgetter(1))
    return desk if score else "general"


SKILLS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "analyst": lambda p: analyse(p["task"]),
    "reasoner": lambda p: list(next_action(p["question"], p["scratchpad"])),
    "triage": lambda p: triage(p["task"]),
    "worker": lambda p: solve(p["task"]),
}


def solve(subtask: str) -> dict[str, Any]:
    """One sub-task: arithmetic if it has some, else a corpus search for its terms."""
    expressions = _EXPR.findall(subtask)
    if expressions:
        return {"task": subtask, "answer": calc(expressions[0])}
    found = [search(t) for t in _terms(subtask)[:3]]
    best = max(found, key=operator.itemgetter("hits"), default=None)
    return {"task": subtask, "answer": best["doc"] if best and best["hits"] else None}


def _fault(flaky: str) -> None:
    """A flaky agent for tests and drills: ``flaky`` names a file holding how many
    more calls fail with a ``ConnectionError`` (one fewer after each)."""
    path = Path(flaky) if flaky else None
    if path is not None and path.exists() and int(path.read_text() or 0) > 0:
        path.write_text(str(int(path.read_text()) - 1))
        raise ConnectionError("the agent is unreachable")


@bf.step(name="agent", circuit_breaker=AGENT_BREAKER, retry_policy=AGENT_RETRY, timeout=30)
def agent(role: str, payload: dict[str, Any], flaky: str = "") -> Any:
    """One agent call: the role's skill on ``payload`` (a stand-in for an LLM call,
    with its failure modes: see :func:`_fault`)."""
    _fault(flaky)
    return SKILLS[role](payload)


def decide(node: str, choice: str, strategy: str, why: str = "") -> dict[str, Any]:
    """Count a decision on the meter and return its row for the decisions artifact."""
    _decisions.add(1, {"node": node, "choice": choice, "strategy": strategy})
    return {"node": node, "choice": choice, "why": why}


# -- the graph's nodes -----------------------------------------------------------------

State = dict[str, Any]


async def orchestrator(state: State) -> State:
    """Ask the analyst for the task's features, then pick the strategy."""
    try:
        features = await agent("analyst", {"task": state["task"]}, state.get("flaky", ""))
    except Exception as err:  # retries exhausted (the last error), or the breaker is open
        code = err.code.value if isinstance(err, bf.OrchestratorError) else type(err).__name__
        attempts = getattr(err, "attempts", 1)
        strategy = "error_recovery"
        why = f"the analyst agent failed [{code}] after {attempts} attempt(s)"
        row = decide("orchestrator", strategy, strategy, why)
        return {"strategy": strategy, "error": str(err), "decisions": [row]}
    strategy, why = choose_strategy(features)
    row = decide("orchestrator", strategy, strategy, why)
    return {"strategy": strategy, "features": features, "decisions": [row]}


async def parallel_executor(state: State) -> State:
    """Run every sub-task at once, one worker agent each, and gather the answers."""
    subtasks = state["features"]["subtasks"]

    def worker(i: int) -> Callable[[State], Any]:
        async def run(shared: State) -> Any:
            return await agent("worker", {"task": subtasks[i]}, shared.get("flaky", ""))

        run.__name__ = f"subtask_{i}"
        return run

    fan_out = bf.scatter_gather(
        [worker(i) for i in range(len(subtasks))], aggregate=list, name="subtasks"
    )
    answers = await fan_out.ainvoke({"flaky": state.get("flaky", "")})
    row = decide("parallel_executor", f"fan-out x{len(subtasks)}", state["strategy"])
    return {"result": {"answers": answers}, "decisions": [row]}


def _desk(name: str) -> Callable[[State], Any]:
    def billing(ticket: State) -> Any:
        amounts = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", ticket["task"])]
        return {"desk": "billing", "amounts": amounts, "total": sum(amounts)}

    def technical(ticket: State) -> Any:
        found = [search(t) for t in _terms(ticket["task"])[:4]]
        return {"desk": "technical", "runbooks": [f for f in found if f["hits"]]}

    def general(ticket: State) -> Any:
        return {"desk": "general", "words": len(ticket["task"].split()), "queued": True}

    return {"billing": billing, "technical": technical, "general": general}[name]


async def conditional_router(state: State) -> State:
    """A ticket: the triage agent picks a desk, and that desk handles it."""
    picked: list[str] = []

    async def classify(ticket: State) -> str:
        picked.append(await agent("triage", {"task": ticket["task"]}, ticket["flaky"]))
        return picked[-1]

    router = bf.Router(classify, {d: _desk(d) for d in ("billing", "technical")}, _desk("general"))
    result = await router.ainvoke({"task": state["task"], "flaky": state.get("flaky", "")})
    row = decide("conditional_router", picked[-1], state["strategy"], f"desk {picked[-1]}")
    return {"result": result, "decisions": [row]}


async def react_agent(state: State) -> State:
    """Reason: pick the next tool from the observations so far, or finish.

    The loop is bounded: after ``max_react_steps`` actions it finishes with what it
    has (``stopped: "max_react_steps"``) instead of going on."""
    pad = state.get("scratchpad", [])
    if len(pad) >= state["max_react_steps"]:
        tool, arg, stopped = "finish", "", "max_react_steps"
    else:
        payload = {"question": state["task"], "scratchpad": pad}
        tool, arg = await agent("reasoner", payload, state.get("flaky", ""))
        stopped = "answered"
    update: State = {"action": [tool, arg]}
    update["decisions"] = [decide("react_agent", tool, state["strategy"], arg)]
    if tool == "finish":
        answer = "; ".join(f"{s['tool']}({s['arg']}) -> {_brief(s['saw'])}" for s in pad)
        update["result"] = {
            "answer": answer,
            "observations": pad,
            "steps": len(pad),
            "stopped": stopped,
        }
    return update


def _brief(seen: Any) -> Any:
    return (seen["doc"] or "nothing") if isinstance(seen, dict) else seen


def tools(state: State) -> State:
    """Act: run the tool the reasoner picked and add what it saw to the scratchpad."""
    tool, arg = state["action"]
    observation = {"calc": calc, "search": search, "count": count}[tool](arg)
    return {
        "scratchpad": [*state.get("scratchpad", []), {"tool": tool, "arg": arg, "saw": observation}]
    }


async def human_approval(state: State) -> State:
    """A risky change: ask a human, and carry out the plan only if approved."""
    features = state["features"]
    plan = [f"step {i + 1}: {s}" for i, s in enumerate(features["subtasks"])]
    prompt = f"Approve this change ({', '.join(features['risk_terms'])})?\n" + "\n".join(plan)
    try:
        decision = await bf.request_approval(prompt, timeout=state["approval_timeout"])
    except bf.OrchestratorError as err:
        if err.code is not bf.ErrorCode.TIMEOUT:
            raise
        row = decide("human_approval", "timed_out", state["strategy"], "no answer in time")
        return {"result": {"executed": False, "plan": plan, "why": "timed out"}, "decisions": [row]}
    choice = "approved" if decision.approved else "rejected"
    why = f"by {decision.reviewer or 'someone'}" + (
        f": {decision.comment}" if decision.comment else ""
    )
    result = {"executed": decision.approved, "plan": plan, "reviewer": decision.reviewer}
    return {
        "result": result,
        "decisions": [decide("human_approval", choice, state["strategy"], why)],
    }


def error_recovery(state: State) -> State:
    """No agent (or no usable task): a degraded answer from local analysis alone."""
    features = analyse(state["task"])
    would_be, why = choose_strategy(features)
    if "error" in state:  # the agent failed: say what it would have done, and when to retry
        choice, detail = "degraded", f"agent unavailable; would route to {would_be}"
        result = {
            "degraded": True,
            "would_route_to": would_be,
            "error": state["error"],
            "breaker": AGENT_BREAKER.state.value,
            "retry_after_s": AGENT_RECOVERY_S,
        }
    else:
        choice, detail = "rejected", why
        result = {"degraded": False, "rejected": why}
    return {
        "result": result,
        "decisions": [decide("error_recovery", choice, "error_recovery", detail)],
    }


def build(max_react_steps: int = 6) -> bf.Graph:
    """orchestrator -(strategy)-> one of five nodes -> end; react_agent ⇄ tools loops."""
    g = bf.Graph(
        name="enterprise-orchestrator",
        reducers={"decisions": operator.add},
        max_iterations=max_react_steps + 2,  # the loop's own cap stops it first
    )
    for name, fn in [
        ("orchestrator", orchestrator),
        ("parallel_executor", parallel_executor),
        ("conditional_router", conditional_router),
        ("react_agent", react_agent),
        ("tools", tools),
        ("human_approval", human_approval),
        ("error_recovery", error_recovery),
    ]:
        g.add_node(name, fn)
    g.add_edge(bf.START, "orchestrator")
    g.add_conditional_edges("orchestrator", lambda s: s["strategy"], ROUTES)
    g.add_conditional_edges(
        "react_agent",
        lambda s: "done" if s["action"][0] == "finish" else "act",
        {"act": "tools", "done": bf.END},
    )
    g.add_edge("tools", "react_agent")
    for node in ("parallel_executor", "conditional_router", "human_approval", "error_recovery"):
        g.add_edge(node, bf.END)
    return g


graph = build()  # `beluga-flows graph draw flows/enterprise_orchestrator.py:graph`


# -- the workflow ----------------------------------------------------------------------


@bf.step
async def publish_decisions(task: str, strategy: str, decisions: list[dict[str, Any]]) -> str:
    """The run's decisions as a markdown table in its Artifacts tab."""
    from prefect.artifacts import acreate_markdown_artifact

    rows = [f"| {d['node']} | {d['choice']} | {d['why']} |".replace("\n", " ") for d in decisions]
    markdown = "\n".join(
        [
            f"**Task:** {task[:200]}",
            "",
            f"**Strategy:** {strategy}",
            "",
            "| node | decision | why |",
            "|---|---|---|",
            *rows,
        ]
    )
    await acreate_markdown_artifact(
        markdown=markdown, key="orchestrator-decisions", description="orchestrator decisions"
    )
    return markdown


async def orchestrate(
    task: str,
    max_react_steps: int = 6,
    approval_timeout: float = 3600.0,
    flaky: str = "",
) -> dict[str, Any]:
    """Analyse ``task``, carry it out with the strategy it needs, record every decision."""
    state = await build(max_react_steps).ainvoke(
        {
            "task": task,
            "max_react_steps": max_react_steps,
            "approval_timeout": approval_timeout,
            "flaky": flaky,
        }
    )
    await publish_decisions(task, state["strategy"], state["decisions"])
    return {
        "strategy": state["strategy"],
        "result": state.get("result"),
        "decisions": state["decisions"],
    }


enterprise = bf.Workflow(orchestrate, name="enterprise-orchestrator")

EXAMPLES = {
    "parallel": "- What is 12 * 7\n- find the doc about jitter\n- which runbook covers breakers",
    "conditional": "Customer says the invoice was charged twice: 49.90 and 49.90",
    "react": "What is 17 * 23 + 4, and how many times does timeout appear?",
    "approval": "Deploy release 4.2 to production; delete the staging database",
    "error_recovery": "",
}


if __name__ == "__main__":
    import json
    import time

    for strategy, task in EXAMPLES.items():
        if strategy == "approval":
            continue  # needs a reviewer: see the module docstring (or `make demo`)
        handle = enterprise.execute(
            {"task": task}, workflow_id=f"ent-{strategy.replace('_', '-')}-{int(time.time())}"
        )
        print(
            json.dumps(
                enterprise.get_result(handle.workflow_id, handle.run_id, timeout=300), indent=2
            )
        )
