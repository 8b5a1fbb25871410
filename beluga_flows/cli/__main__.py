"""``python -m beluga_flows.cli``: the ``beluga-flows`` command."""

import sys

from beluga_flows.cli.main import main

sys.exit(main())
