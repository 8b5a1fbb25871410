"""The one log record per run, and :func:`configure_logging`.

Every chain, graph, workflow and definition run logs one record on the logger
``beluga_flows`` when it ends: INFO when it succeeded, WARNING when it was
cancelled, ERROR when it failed, with the extra fields ``operation``, the name field
(``chain.name``, ``graph.name``, ``workflow.name``), ``duration`` (seconds),
``status`` (``ok``, ``error``, ``cancelled``), ``error.code`` on failure and
``trace.id`` / ``span.id`` (hex) when a span is recording. The message names the
run, never its data (the error's message only with ``record_data``).
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

from opentelemetry.trace import Span, format_span_id, format_trace_id

__all__ = ["LOGGER", "configure_logging", "log_run", "span_ids"]

LOGGER = logging.getLogger("beluga_flows")
_LEVELS = {"ok": logging.INFO, "cancelled": logging.WARNING, "error": logging.ERROR}


def log_run(
    operation: str,
    name_key: str,
    name: str,
    duration: float,
    status: str,
    code: str | None,
    ids: tuple[str, str] | None,
    message: str | None = None,
) -> None:
    """Log the end of one run (see the module docstring); ``ids`` are its span's
    (:func:`span_ids`), ``message`` the error's own, given only when data may be
    recorded."""
    level = _LEVELS[status]
    if not LOGGER.isEnabledFor(level):
        return
    extra: dict[str, Any] = {
        "operation": operation,
        name_key: name,
        "duration": round(duration, 6),
        "status": status,
    }
    text = f"{operation} {name!r} {status} in {duration:.3f}s"
    if code is not None:
        extra["error.code"] = code
        text += f" [{code}]"
    if message is not None:
        extra["error.message"] = message
        text += f": {message}"
    if ids is not None:
        extra["trace.id"], extra["span.id"] = ids
    LOGGER.log(level, text, extra=extra)


def span_ids(sp: Span) -> tuple[str, str] | None:
    """``(trace id, span id)`` in hex of a recording span (read it before it ends)."""
    if not sp.is_recording():
        return None
    ctx = sp.get_span_context()
    return format_trace_id(ctx.trace_id), format_span_id(ctx.span_id)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure_logging` installs (and replaces when called again)."""


def configure_logging(
    json: bool = True, level: int | str = "INFO", stream: IO[str] | None = None
) -> logging.Logger:
    """Make the ``beluga_flows`` logger write to ``stream`` (default stderr): one JSON
    object per line with ``level``, ``message``, ``time``, ``logger`` and the record's
    extra fields (``json=True``), or plain text lines. Calling it again replaces the
    handler it installed; other handlers are left alone. Returns the logger.

    Example::

        bf.configure_logging(json=True, level="INFO")
        # {"level": "INFO", "message": "chain.invoke 'etl' ok in 0.012s",
        #  "operation": "chain.invoke", "chain.name": "etl", "duration": 0.012,
        #  "status": "ok", "time": "2025-01-01T12:00:00.000000+00:00", ...}
    """
    handler = _Handler(stream if stream is not None else sys.stderr)
    if json:
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "{levelname}{message}{name}",
                style="{",
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp="time",
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    for old in [h for h in LOGGER.handlers if isinstance(h, _Handler)]:
        LOGGER.removeHandler(old)
    LOGGER.addHandler(handler)
    LOGGER.setLevel(level.upper() if isinstance(level, str) else level)
    return LOGGER
