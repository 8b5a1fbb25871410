"""A worker process for the crash tests: hosts one workflow until it is killed.

usage: workflow_crash_worker.py WORKFLOW_ID LEDGER [WORKFLOW [INPUT_JSON]]
WORKFLOW names a workflow of ``workflow_app`` (default ``steps``, the ten-step one);
INPUT_JSON is merged over ``{"ledger": LEDGER}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import workflow_app

if __name__ == "__main__":
    workflow_id, ledger = sys.argv[1], sys.argv[2]
    name = sys.argv[3] if len(sys.argv) > 3 else "steps"
    extra = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {"delay": 0.5}
    workflow = getattr(workflow_app, name)
    workflow.execute({"ledger": ledger, **extra}, workflow_id=workflow_id)
    try:
        print(workflow.get_result(workflow_id, timeout=300))
    except workflow_app.bf.OrchestratorError as err:
        print(err.code)
