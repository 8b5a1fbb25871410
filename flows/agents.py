"""Agent patterns with fake agents (fast and deterministic): a support desk.

A Handoff routes each ticket from triage to a specialist; the billing specialist
asks a Supervisor of two clerks (round robin) to draft the reply; the tech
specialist looks the error up with a hedged call (a slow primary knowledge base, a
fast mirror started after 50 ms). Each agent call is a task run named after the
agent, all inside one flow run per ticket::

    python flows/agents.py                      # needs a Prefect API (or a temp server)
    BELUGA_FLOWS_PROVIDER=local python flows/agents.py
"""

import asyncio

import beluga_flows as bf


def clerk(name: str):
    def draft(ticket: str) -> str:
        return f"[{name}] refund approved for: {ticket}"

    draft.__name__ = name
    return draft


clerks = bf.Supervisor(bf.round_robin(), [clerk("ana"), clerk("ben")], name="clerks")


async def slow_kb(error: str) -> str:
    await asyncio.Event().wait()  # the primary knowledge base hangs today
    return "never"


async def mirror_kb(error: str) -> str:
    return f"KB: restart the service to clear {error}"


lookup = bf.hedge(slow_kb, mirror_kb, delay=0.05, name="kb-lookup")


def triage(ticket: str):
    if "refund" in ticket or "charge" in ticket:
        return bf.handoff_to("billing")
    if "error" in ticket:
        return bf.handoff_to("tech", ticket.split()[-1])  # the error code goes on
    return "Thanks, we will get back to you."


async def billing(ticket: str) -> str:
    return await clerks.ainvoke(ticket)


async def tech(error: str) -> str:
    return await lookup.ainvoke(error)


desk = bf.Handoff({"triage": triage, "billing": billing, "tech": tech}, entry="triage")


@bf.flow(name="support-desk")
async def support(ticket: str) -> str:
    return await desk.ainvoke(ticket)


if __name__ == "__main__":
    for ticket in ("refund my double charge", "the app shows error E42", "hello", "refund"):
        answer = asyncio.run(support(ticket))
        print(f"{' -> '.join(desk.last_path)}: {answer}")
