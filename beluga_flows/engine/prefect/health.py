"""What an orchestrator's health check asks of Prefect: where the API is, and how to
authenticate to it. Part of the Prefect adapter.

``PREFECT_API_URL`` in the environment wins (it may change after Prefect read its
settings, as in tests and ``beluga-flows health`` connecting to the home's server);
else the active Prefect profile's setting; ``None`` means runs use a temporary local
server.
"""

from __future__ import annotations

import os

from prefect.settings import get_current_settings

__all__ = ["api_headers", "api_url"]


def api_url() -> str | None:
    """The configured Prefect API URL, or ``None`` (a temporary server)."""
    return os.environ.get("PREFECT_API_URL") or get_current_settings().api.url


def api_headers() -> dict[str, str]:
    """The headers a request to the API needs (a Prefect Cloud key, when set)."""
    key = os.environ.get("PREFECT_API_KEY")
    if not key:
        secret = get_current_settings().api.key
        key = secret.get_secret_value() if secret is not None else None
    return {"Authorization": f"Bearer {key}"} if key else {}
