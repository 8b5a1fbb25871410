"""An entrypoint file that does not import (for the deployment tests)."""

import no_such_package_anywhere  # noqa: F401

flow = None
