"""A worker process for the crash test: runs a ten-step workflow until it is killed."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from workflow_app import steps

if __name__ == "__main__":
    workflow_id, ledger = sys.argv[1], sys.argv[2]
    steps.execute({"ledger": ledger, "delay": 0.5}, workflow_id=workflow_id)
    print(steps.get_result(workflow_id, timeout=300))
