"""Inputs whose pickles differ between processes (they hold sets): the durable key
of each must not. Also a workflow that charges a pydantic order, for the resume test.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from pathlib import Path

import pydantic

import beluga_flows as bf
from beluga_flows.engine.base import input_hash
from tests.workflow_app import lines, note


class Order(pydantic.BaseModel):
    order_id: int
    sku: str
    tags: set[str] = set()
    note: str | None = None


@dataclasses.dataclass(frozen=True)
class Basket:
    owner: str
    items: frozenset[str]
    extras: set[str] = dataclasses.field(default_factory=set)


class Colour(enum.Enum):
    RED = "red"


class Plain:
    def __init__(self) -> None:
        self.labels = {"x", "y", "z", "w"}
        self.count = 3


def values() -> dict[str, tuple[tuple[object, ...], dict[str, object]]]:
    order = Order(order_id=7, sku="kettle", tags={"gift", "fragile", "express", "eu"})
    return {
        "pydantic": ((order,), {}),
        "dataclass": ((Basket("ana", frozenset({"a", "b", "c", "d", "e"}), {"p", "q", "r"}),), {}),
        "set of strings": (({"alpha", "beta", "gamma", "delta", "epsilon"},), {}),
        "dict with tuple keys": (({("a", 1): {"s", "t", "u"}, ("b", 2): None},), {}),
        "enum and object": ((Colour.RED,), {"plain": Plain()}),
        "kwargs": ((), {"order": order, "when": "now"}),
    }


def keys() -> dict[str, str | None]:
    return {name: input_hash(args, kwargs) for name, (args, kwargs) in values().items()}


@bf.step
def charge(order: Order, ledger: str) -> str:
    note(ledger, f"charge {order.order_id}")
    return f"payment-{order.order_id}"


@bf.step
def ship(order: Order, ledger: str) -> str:
    broken = Path(ledger + ".broken")
    if broken.exists():  # fails once: the flag is used up
        broken.unlink()
        raise RuntimeError("the courier is down")
    note(ledger, f"ship {order.order_id}")
    return f"parcel-{order.order_id}"


def order_flow(ledger: str) -> dict[str, str]:
    order = Order(order_id=7, sku="kettle", tags={"gift", "fragile", "express", "eu"})
    return {"payment": charge(order, ledger), "parcel": ship(order, ledger)}


orders = bf.Workflow(order_flow, name="wf-pydantic-orders", mode="in_process")

if __name__ == "__main__":  # python -m tests.durable_values keys | execute ID LEDGER | resume ID
    command = sys.argv[1]
    if command == "keys":
        print(json.dumps(keys()))
    elif command == "execute":
        orders.execute({"ledger": sys.argv[3]}, workflow_id=sys.argv[2])
        try:
            orders.get_result(sys.argv[2], timeout=120)
        except bf.OrchestratorError as err:
            print(err.code)
    else:
        handle = orders.resume(sys.argv[2])
        print(json.dumps(orders.get_result(sys.argv[2], handle.run_id, timeout=120)))
    assert lines is not None
