"""An order workflow: reserve stock, charge, wait for approval above a threshold, ship.

Each step that changes the world registers its undo with ``bf.compensate``; if the
order is rejected, fails or is cancelled, the undos run in reverse order (refund,
then release the stock), each as its own task run in the Prefect UI. Every step's
effect is appended to a ledger file, so you can see what ran and what was undone.

Run it and approve it from another terminal::

    beluga-flows workflow start flows/order_workflow.py:orders --id order-7 \\
        --param order_id=7 --param amount=740
    beluga-flows workflow signal order-7 approval --data '{"approved": true, "reviewer": "ana"}'
    beluga-flows workflow result order-7
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import beluga_flows as bf

APPROVAL_THRESHOLD = 500.0


def _record(ledger: str, event: str, **data: object) -> None:
    path = Path(ledger)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps({"event": event, **data, "at": round(time.time(), 3)}) + "\n")


@bf.step(retries=2)
def reserve_stock(order_id: int, sku: str, ledger: str) -> str:
    """Hold the items in the warehouse."""
    _record(ledger, "reserved", order_id=order_id, sku=sku)
    return f"hold-{order_id}-{sku}"


@bf.step
def release_stock(hold: str, ledger: str) -> None:
    """Undo of reserve_stock."""
    _record(ledger, "released", hold=hold)


@bf.step(retries=2, timeout=30)
def charge_card(order_id: int, amount: float, ledger: str) -> str:
    """Take the payment."""
    _record(ledger, "charged", order_id=order_id, amount=amount)
    return f"payment-{order_id}"


@bf.step
def refund(payment: str, amount: float, ledger: str) -> None:
    """Undo of charge_card."""
    _record(ledger, "refunded", payment=payment, amount=amount)


@bf.step
def ship(order_id: int, hold: str, ledger: str) -> str:
    """Hand the parcel to the carrier."""
    _record(ledger, "shipped", order_id=order_id, hold=hold)
    return f"parcel-{order_id}"


def process_order(
    order_id: int,
    amount: float,
    sku: str = "kayak",
    ledger: str = "out/order_ledger.jsonl",
    approval_timeout: float = 3600.0,
) -> dict[str, object]:
    """Reserve, charge, get approval when ``amount`` is above the threshold, ship."""
    stage = {"now": "reserving"}

    @bf.query_handler("progress")
    def progress() -> str:
        return stage["now"]

    hold = reserve_stock(order_id, sku, ledger)
    bf.compensate(lambda: release_stock(hold, ledger))
    bf.report_progress(25, "stock reserved")
    stage["now"] = "charging"
    payment = charge_card(order_id, amount, ledger)
    bf.compensate(lambda: refund(payment, amount, ledger))
    bf.report_progress(50, "card charged")

    reviewer = None
    if amount > APPROVAL_THRESHOLD:
        stage["now"] = "awaiting approval"
        decision = bf.request_approval(
            f"Order {order_id}: approve a charge of {amount:.2f}?", timeout=approval_timeout
        )
        if not decision.approved:
            raise bf.OrchestratorError(
                "order",
                f"order {order_id} rejected by {decision.reviewer or 'a reviewer'}",
                bf.ErrorCode.INVALID_STATE,
            )
        reviewer = decision.reviewer
    stage["now"] = "shipping"
    parcel = ship(order_id, hold, ledger)
    bf.report_progress(100, "shipped")
    stage["now"] = "done"
    return {"order_id": order_id, "payment": payment, "parcel": parcel, "approved_by": reviewer}


orders = bf.Workflow(process_order, name="orders")
