"""JSON-lines logs (structlog) with secrets masked wherever they appear.

Every line has timestamp, level, service and instance (bound by the service
context) and, while an event is handled, its correlation id.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]+@", re.I
)
_SECRET_KEYS = re.compile(r"pass(word)?|secret|token|api[_-]?key|credential|authorization", re.I)
_KEY_VALUE = re.compile(
    r"(?P<key>\b\w*(?:password|secret|token|api[_-]?key)\w*\b\s*[=:]\s*)(?P<q>['\"]?)[^\s'\",}]+",
    re.I,
)
MASK = "***"


def mask_text(text: str) -> str:
    """Mask credentials in URLs and ``key=value`` pairs of secret-looking keys."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _KEY_VALUE.sub(lambda m: f"{m['key']}{m['q']}{MASK}", text)


def _mask_processor(
    _logger: object, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if _SECRET_KEYS.search(key) and value is not None:
            event_dict[key] = MASK
        elif isinstance(value, str):
            event_dict[key] = mask_text(value)
    return event_dict


def configure(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send JSON lines at ``level`` and above to ``stream`` (stderr by default)."""
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _mask_processor,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
