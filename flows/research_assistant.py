"""Example: a research assistant as a graph, on a local corpus (no network).

``plan`` turns the question into search terms; three searchers run in parallel
(by title, by body text, by phrase); ``review`` checks which terms still lack
evidence and loops back to ``plan`` with broader terms (at most ``max_rounds``
times); ``write`` turns the findings into a cited markdown report. Each node
execution is a task run of the ``research-assistant`` flow run; the graph's
drawing is attached to the run as an artifact (``artifact=True``).

    beluga-flows run flows/research_assistant.py:research --param question="..."
"""

from __future__ import annotations

import operator
import re
from pathlib import Path
from typing import Any

import beluga_flows as bf

CORPUS = Path(__file__).parent / "data" / "corpus"
STOPWORDS = {
    "that",
    "handle",
    "sometimes",
    "a",
    "an",
    "and",
    "are",
    "do",
    "does",
    "how",
    "i",
    "in",
    "is",
    "of",
    "the",
    "to",
    "what",
    "when",
    "why",
    "with",
    "should",
    "my",
    "for",
    "on",
}
# What the planner widens a term to when a round found nothing for it.
BROADER = {
    "flaky": ["retry", "transient"],
    "hang": ["timeout", "deadline"],
    "slow": ["timeout", "parallel"],
    "outage": ["breaker", "failing"],
    "visibility": ["observability", "traces"],
    "api": ["dependency", "service"],
}


def _docs() -> dict[str, str]:
    """Each document's title line and its body as one line of text."""
    docs = {}
    for path in sorted(CORPUS.glob("*.md")):
        title, _, body = path.read_text().partition("\n")
        docs[path.stem] = title.lstrip("# ") + "\n" + " ".join(body.split())
    return docs


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 4 and word.endswith("s") else word


def _terms(text: str) -> list[str]:
    words = re.findall(r"[a-z0-9-]+", text.lower())
    return [_stem(w) for w in dict.fromkeys(words) if w not in STOPWORDS and len(w) > 2]


def plan(state: dict[str, Any]) -> dict[str, Any]:
    """First round: the question's terms; later rounds: broader terms for the gaps."""
    if not state.get("round"):
        terms = _terms(state["question"])
    else:
        terms = [b for gap in state["gaps"] for b in BROADER.get(gap, [gap])]
    return {"terms": terms, "round": state.get("round", 0) + 1}


def _finding(doc: str, term: str, how: str, text: str) -> dict[str, str]:
    body = text.partition("\n")[2]
    sentence = next((s for s in re.split(r"(?<=\.)\s", body) if term in s.lower()), "")
    return {"doc": doc, "term": term, "how": how, "evidence": sentence}


def search_titles(state: dict[str, Any]) -> dict[str, Any]:
    """Terms that appear in a document's title."""
    hits = [
        _finding(doc, t, "title", text)
        for doc, text in _docs().items()
        for t in state["terms"]
        if t in text.splitlines()[0].lower()
    ]
    return {"findings": hits}


def search_bodies(state: dict[str, Any]) -> dict[str, Any]:
    """Terms that appear in a document's body, best document per term."""
    hits = []
    for t in state["terms"]:
        counts = {doc: text.lower().count(t) for doc, text in _docs().items()}
        doc, n = max(counts.items(), key=operator.itemgetter(1))
        if n:
            hits.append(_finding(doc, t, f"body x{n}", _docs()[doc]))
    return {"findings": hits}


async def search_phrases(state: dict[str, Any]) -> dict[str, Any]:
    """Adjacent term pairs that appear verbatim."""
    pairs = [f"{a} {b}" for a, b in zip(state["terms"], state["terms"][1:], strict=False)]
    hits = [
        _finding(doc, p, "phrase", text)
        for doc, text in _docs().items()
        for p in pairs
        if p in text.lower()
    ]
    return {"findings": hits}


def review(state: dict[str, Any]) -> dict[str, Any]:
    """Which of this round's terms found no evidence."""
    found = {f["term"] for f in state["findings"]}
    return {"gaps": [t for t in state["terms"] if t not in found and " " not in t]}


def write(state: dict[str, Any]) -> dict[str, Any]:
    """A markdown report: one section per source document, with its evidence."""
    by_doc: dict[str, list[dict[str, str]]] = {}
    for f in state["findings"]:
        by_doc.setdefault(f["doc"], []).append(f)
    lines = [
        f"# {state['question']}",
        "",
        f"{len(state['findings'])} findings in {len(by_doc)} documents, "
        f"{state['round']} research round(s); unanswered: {state['gaps'] or 'none'}.",
    ]
    for doc, items in sorted(by_doc.items(), key=lambda kv: -len(kv[1])):
        lines += ["", f"## {doc}", ""]
        seen: set[str] = set()
        for f in items:
            if f["evidence"] and f["evidence"] not in seen:
                seen.add(f["evidence"])
                lines.append(f"* {f['evidence']} _(matched {f['term']!r} by {f['how']})_")
    return {"report": "\n".join(lines) + "\n"}


def build(max_rounds: int = 3) -> bf.Graph:
    """The research graph: plan → 3 parallel searchers → review ↺ plan → write."""
    g = bf.Graph(
        name="research-graph",
        reducers={"findings": operator.add},
        max_iterations=max_rounds,
        artifact=True,  # the drawing in the run's Artifacts tab (one more request per run)
    )
    for name, fn in [
        ("plan", plan),
        ("search_titles", search_titles),
        ("search_bodies", search_bodies),
        ("search_phrases", search_phrases),
        ("review", review),
        ("write", write),
    ]:
        g.add_node(name, fn)
    g.add_edge(bf.START, "plan")
    for searcher in ("search_titles", "search_bodies", "search_phrases"):
        g.add_edge("plan", searcher).add_edge(searcher, "review")
    g.add_conditional_edges(
        "review",
        lambda s: "again" if s["gaps"] and s["round"] < max_rounds else "done",
        {"again": "plan", "done": "write"},
    )
    return g


research_graph = build()  # `beluga-flows graph draw flows/research_assistant.py:research_graph`


@bf.flow(name="research-assistant", timeout=300)
async def research(
    question: str = "How should I handle a flaky API that sometimes hangs?",
    out_dir: str = "out",
    max_rounds: int = 3,
) -> dict[str, Any]:
    """Research ``question`` in the local corpus; write ``<out_dir>/research.md``."""
    state = await build(max_rounds).ainvoke({"question": question})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "research.md").write_text(state["report"])
    return {
        "rounds": state["round"],
        "findings": len(state["findings"]),
        "gaps": state["gaps"],
        "report": str(out / "research.md"),
    }


if __name__ == "__main__":
    import asyncio

    print(asyncio.run(research()))
