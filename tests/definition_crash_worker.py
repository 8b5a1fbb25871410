"""A worker process for the definition crash test: starts a durable run of
``definition_app.DEFINITION`` in-process and waits for it, until it is killed.

usage: definition_crash_worker.py WORKFLOW_ID LEDGER DELAY
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from tests.definition_app import DEFINITION, engine

if __name__ == "__main__":
    workflow_id, ledger, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    runner = engine()
    runner.start(DEFINITION, {"ledger": ledger, "delay": delay}, workflow_id=workflow_id)
    print(runner.result(DEFINITION, workflow_id, timeout=300).status)
