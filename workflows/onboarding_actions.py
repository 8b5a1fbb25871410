"""Actions of ``workflows/onboarding.yaml``: customer onboarding with real local side effects.

The customer comes from ``workflows/data/customers.json``; accounts, credit lines and
cards are rows in ``<out_dir>/onboarding.db`` (SQLite); the welcome e-mail is a file in
``<out_dir>/outbox``, the fallback letter a file in ``<out_dir>/letters``. Every
provisioning action has a rollback action that deletes exactly what it wrote.

    beluga-flows definition run workflows/onboarding.yaml \\
        --actions workflows/onboarding_actions.py --input '{"customer_id": "c-1001"}'
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import beluga_flows as bf

ROOT = Path(__file__).resolve().parent.parent  # the repository: relative paths fall back to it

DISPOSABLE_DOMAINS = {"mailinator.example", "throwaway.example"}
CARD_COUNTRIES = {"PT", "ES", "FR", "DE", "NL", "IE", "GB", "IT"}
SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    account_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, product TEXT NOT NULL,
    opened_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS credit_lines (
    customer_id TEXT PRIMARY KEY, credit_limit INTEGER NOT NULL, approved_by TEXT NOT NULL,
    granted_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cards (
    card_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, account_id TEXT NOT NULL,
    issued_at TEXT NOT NULL);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _resolve(path: str) -> Path:
    """``path`` as given, else relative to the repository (runs from another directory)."""
    given = Path(path)
    return given if given.is_absolute() or given.exists() else ROOT / given


@contextmanager
def _db(out_dir: str) -> Iterator[sqlite3.Connection]:
    """A connection to ``<out_dir>/onboarding.db`` that commits on success."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(Path(out_dir) / "onboarding.db", timeout=30)
    try:
        conn.executescript(SCHEMA)
        with conn:
            yield conn
    finally:
        conn.close()


# -- fetch -------------------------------------------------------------------------------


@bf.action
def load_customer(customer_id: str, source: str) -> dict[str, Any]:
    """Find ``customer_id`` in the JSON file ``source`` and normalise the record."""
    records = json.loads(_resolve(source).read_text())
    raw = next((r for r in records if r["customer_id"] == customer_id), None)
    if raw is None:
        raise bf.OrchestratorError(
            "load_customer", f"no customer {customer_id!r} in {source}", bf.ErrorCode.NOT_FOUND
        )
    email = (raw.get("email") or "").strip().lower() or None
    kind = raw["kind"].strip().lower()
    return {
        "customer_id": raw["customer_id"],
        "name": " ".join(raw["name"].split()),
        "kind": kind,
        "country": raw["country"].strip().upper(),
        "email": email,
        "document_id": raw.get("document_id") or raw.get("registration_no"),
        "date_of_birth": raw.get("date_of_birth"),
        "income": raw.get("annual_income") if kind == "consumer" else raw.get("annual_revenue"),
        "requested_limit": int(raw["requested_limit"]),
        "credit_file": not raw.get("no_credit_file", False),
    }


# -- the three checks (children of the parallel step) -----------------------------------


@bf.action
def kyc_check(customer: dict[str, Any]) -> dict[str, Any]:
    """Identity: a document (or company registration) and, for people, age 18 or more."""
    if not customer["document_id"]:
        what = "company registration" if customer["kind"] == "business" else "identity document"
        raise ValueError(f"KYC: no {what} on file for {customer['customer_id']}")
    if customer["kind"] == "consumer":
        born = date.fromisoformat(customer["date_of_birth"])
        if (date.today() - born).days < 18 * 365:
            raise ValueError(f"KYC: {customer['customer_id']} is under 18")
    return {"verified": True, "document": customer["document_id"]}


@bf.action
def credit_check(customer: dict[str, Any]) -> dict[str, Any]:
    """A deterministic stand-in for a credit bureau: a score from 300 to 850."""
    if not customer["credit_file"]:
        raise LookupError(f"credit bureau: no file for {customer['customer_id']}")
    income = customer["income"] or 0
    scale = 1000 if customer["kind"] == "business" else 100
    score = min(850, 300 + income // scale)
    band = "A" if score >= 700 else "B" if score >= 600 else "C"
    return {"score": score, "band": band}


@bf.action
def fraud_check(customer: dict[str, Any]) -> dict[str, Any]:
    """Reject disposable e-mail domains."""
    domain = (customer["email"] or "@").rsplit("@", 1)[1]
    if domain in DISPOSABLE_DOMAINS:
        raise ValueError(f"fraud: {domain} is a disposable e-mail domain")
    return {"clear": True}


# -- decisions ---------------------------------------------------------------------------


@bf.action
def assign_credit_limit(customer: dict[str, Any], checks: dict[str, Any]) -> dict[str, Any]:
    """The limit from the requested amount, what the customer can afford and the score.

    ``checks`` is the parallel step's output: a check that failed has no entry in
    ``checks["results"]``. Without a credit score the limit is capped at 1 000.
    """
    credit = checks["results"].get("credit_check")
    requested = customer["requested_limit"]
    if credit is None:
        return {"credit_limit": min(requested, 1000), "risk_band": "unscored"}
    share = 0.05 if customer["kind"] == "business" else 0.3
    limit = min(requested, int((customer["income"] or 0) * share))
    if credit["band"] == "C":
        limit = min(limit, 2000)
    return {"credit_limit": limit, "risk_band": credit["band"]}


# -- provisioning (SQLite) and their rollbacks -------------------------------------------


@bf.action
def open_account(customer: dict[str, Any], product: str, out_dir: str) -> dict[str, Any]:
    """Insert the customer's account; the id is derived from the customer id."""
    account_id = f"ACC-{customer['customer_id']}"
    with _db(out_dir) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO accounts VALUES (?, ?, ?, ?)",
            (account_id, customer["customer_id"], product, _now()),
        )
    return {"account_id": account_id, "product": product}


@bf.action
def close_account(data: dict[str, Any]) -> None:
    """Rollback of ``open_account``: delete the account row."""
    with _db(data["out_dir"]) as conn:
        conn.execute("DELETE FROM accounts WHERE account_id = ?", (data["account_id"],))


@bf.action
def grant_credit_line(
    customer_id: str, credit_limit: int, approved_by: str | None, out_dir: str
) -> dict[str, Any]:
    """Insert the credit line, with who approved it (``auto`` below the threshold)."""
    with _db(out_dir) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO credit_lines VALUES (?, ?, ?, ?)",
            (customer_id, credit_limit, approved_by or "unknown", _now()),
        )
    return {"credit_limit": credit_limit, "approved_by": approved_by}


@bf.action
def revoke_credit_line(data: dict[str, Any]) -> None:
    """Rollback of ``grant_credit_line``: delete the credit line row."""
    with _db(data["out_dir"]) as conn:
        conn.execute(
            "DELETE FROM credit_lines WHERE customer_id = ?", (data["customer"]["customer_id"],)
        )


@bf.action
def issue_card(customer: dict[str, Any], account_id: str, out_dir: str) -> dict[str, Any]:
    """Insert a debit card; the (fake) issuer serves a fixed list of countries."""
    if customer["country"] not in CARD_COUNTRIES:
        raise bf.OrchestratorError(
            "issue_card",
            f"card issuer does not serve {customer['country']}",
            bf.ErrorCode.INVALID_INPUT,
        )
    card_id = f"CARD-{customer['customer_id']}"
    with _db(out_dir) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO cards VALUES (?, ?, ?, ?)",
            (card_id, customer["customer_id"], account_id, _now()),
        )
    return {"card_id": card_id}


@bf.action
def cancel_card(data: dict[str, Any]) -> None:
    """Rollback of ``issue_card``: delete the card row."""
    with _db(data["out_dir"]) as conn:
        conn.execute("DELETE FROM cards WHERE customer_id = ?", (data["customer"]["customer_id"],))


# -- welcome -----------------------------------------------------------------------------


@bf.action
def send_welcome(customer: dict[str, Any], credit_limit: int, out_dir: str) -> dict[str, Any]:
    """Write the welcome e-mail to ``<out_dir>/outbox``; no e-mail address is an error."""
    if not customer["email"]:
        raise ValueError(f"{customer['customer_id']} has no e-mail address")
    outbox = Path(out_dir) / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    path = outbox / f"{customer['customer_id']}.eml"
    path.write_text(
        f"To: {customer['email']}\nSubject: Welcome, {customer['name']}\n\n"
        f"Your account is open. Credit limit: {credit_limit}.\n"
    )
    return {"channel": "email", "path": str(path)}


@bf.action
def post_welcome_letter(data: dict[str, Any]) -> dict[str, Any]:
    """Error handler of ``send_welcome``: queue a paper letter instead (recovers the step)."""
    customer = data["customer"]
    letters = Path(data["out_dir"]) / "letters"
    letters.mkdir(parents=True, exist_ok=True)
    path = letters / f"{customer['customer_id']}.txt"
    path.write_text(
        f"{customer['name']}\n\nYour account is open. Credit limit: {data['credit_limit']}.\n"
        f"(sent by post: {data['error']['message']})\n"
    )
    return {"channel": "letter", "path": str(path)}
