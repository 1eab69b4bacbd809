"""JSON-lines logs (structlog) with secrets masked wherever they appear.

Every line has timestamp, level, service and instance (bound once per process with
``bind_process``, or by the service context) and, while a batch of events is handled,
the correlation id of its events (``handling``). Lines of the standard library's
loggers (uvicorn, alembic, asyncio) go through the same chain, so they are JSON too.

Masking is layered: values of secret-looking keys are replaced, credentials in URLs
(``redis://:pw@host``) and ``key=value`` pairs of secret-looking keys are masked in
every string, and the actual secret values of this process (``register_secrets``) are
masked wherever they appear, even in text no pattern anticipates.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from contextvars import ContextVar
from typing import Any, Protocol, TextIO, cast

import structlog

_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]+@", re.I
)
_SECRET_KEYS = re.compile(
    r"pass(word|wd|phrase)|^pass$|_pass$|pwd|secret|token|api[_-]?key|apikey|credential|"
    r"authorization|signature|private[_-]?key|dsn|cookie",
    re.I,
)
_KEY_VALUE = re.compile(
    r"(?P<key>\b[\w-]*(?:password|passwd|secret|token|api[_-]?key|apikey|signature|"
    r"credential)[\w-]*\b['\"]?\s*[=:]\s*)(?P<q>['\"]?)[^\s'\",}&;]+",
    re.I,
)
_BEARER = re.compile(r"\b(?P<scheme>Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{6,}", re.I)
MASK = "***"
_MIN_SECRET_LEN = 4
"""Shorter registered secrets are not masked verbatim (they would mask ordinary text)."""

_secrets: set[str] = set()
_secret_pattern: re.Pattern[str] | None = None
_identity: dict[str, str] = {}


def register_secrets(values: Iterable[str | None]) -> None:
    """Mask these exact values wherever they appear in logs and health (process-wide)."""
    global _secret_pattern
    _secrets.update(v for v in values if v and len(v) >= _MIN_SECRET_LEN)
    if _secrets:
        # Longest first, so a secret containing another is masked whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(v) for v in ordered))


def clear_secrets() -> None:
    """Forget registered secrets (tests)."""
    global _secret_pattern
    _secrets.clear()
    _secret_pattern = None


def mask_text(text: str) -> str:
    """Mask registered secrets, credentials in URLs, bearer tokens and ``key=value``
    pairs of secret-looking keys."""
    if _secret_pattern is not None:
        text = _secret_pattern.sub(MASK, text)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _BEARER.sub(lambda m: f"{m['scheme']} {MASK}", text)
    return _KEY_VALUE.sub(lambda m: f"{m['key']}{m['q']}{MASK}", text)


def mask_value(value: object, *, keep_objects: bool = False, _depth: int = 0) -> object:
    """``value`` with every secret masked: strings, nested dicts, lists and tuples.

    Args:
        keep_objects: leave other objects as they are (for an encoder that knows
            them); by default they become their masked ``repr``, which is what the
            JSON log renderer would print.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return mask_text(value)
    if _depth > 8:
        return MASK
    if isinstance(value, dict):
        return {
            k: MASK if isinstance(k, str) and _SECRET_KEYS.search(k) and v is not None
            else mask_value(v, keep_objects=keep_objects, _depth=_depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_value(v, keep_objects=keep_objects, _depth=_depth + 1) for v in value]
    return value if keep_objects else mask_text(repr(value))


def _mask_processor(
    _logger: object, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if _SECRET_KEYS.search(key) and value is not None:
            event_dict[key] = MASK
        else:
            event_dict[key] = mask_value(value)
    return event_dict


# identity and correlation ---------------------------------------------------------------


def bind_process(**identity: str) -> None:
    """Fields every line of this process carries unless it has its own (service,
    instance)."""
    _identity.update(identity)


def _add_identity(
    _logger: object, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in _identity.items():
        event_dict.setdefault(key, value)
    return event_dict


class _Correlated(Protocol):
    @property
    def correlation_id(self) -> str: ...


class _HasEvents(Protocol):
    @property
    def events(self) -> Sequence[_Correlated]: ...


_MAX_IDS = 20
_handling: ContextVar[Sequence[_HasEvents] | None] = ContextVar("cdb_handling", default=None)


@contextlib.contextmanager
def handling(batches: Sequence[_HasEvents]) -> Iterator[None]:
    """While in this block, log lines carry the correlation id of the events of
    ``batches`` (objects with ``.events``). Costs one context variable per batch: the
    ids are only collected when a line is actually logged."""
    token = _handling.set(batches)
    try:
        yield
    finally:
        _handling.reset(token)


def correlation_fields(batches: Sequence[_HasEvents]) -> dict[str, object]:
    """``correlation_id`` when the events share one, else ``correlation_ids`` (the
    first ``_MAX_IDS`` distinct ones) and their number."""
    seen: dict[str, None] = {}
    for batch in batches:
        for event in batch.events:
            if event.correlation_id:
                seen[event.correlation_id] = None
    if not seen:
        return {}
    ids = list(seen)
    if len(ids) == 1:
        return {"correlation_id": ids[0]}
    return {"correlation_ids": ids[:_MAX_IDS], "correlation_ids_total": len(ids)}


def _add_correlation(
    _logger: object, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    batches = _handling.get()
    if batches and "correlation_id" not in event_dict:
        for key, value in correlation_fields(batches).items():
            event_dict.setdefault(key, value)
    return event_dict


# configuration --------------------------------------------------------------------------

_handler: logging.Handler | None = None


def _chain() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        _add_identity,
        _add_correlation,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


_LIBRARY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic", "asyncio")


class _CurrentStderr:
    """``sys.stderr`` as it is at each write: a caller that swaps it for a while (a CLI
    runner, a test's capture) and closes its own afterwards leaves the logs working."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send JSON lines at ``level`` and above to ``stream`` (stderr by default); the
    standard library's loggers go the same way."""
    global _handler
    numeric = logging.getLevelName(level.upper())
    out = stream or cast(TextIO, _CurrentStderr())
    structlog.configure(
        processors=[
            *_chain(),
            structlog.processors.format_exc_info,
            _mask_processor,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_chain(), structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _mask_processor,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(numeric)
    _handler = handler
    # Libraries that configure their own logging (uvicorn's default dictConfig, run
    # by any uvicorn server in the process) would otherwise bypass the JSON chain.
    for name in _LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
        library.disabled = False


def reset() -> None:
    """Undo ``configure``, ``bind_process`` and ``register_secrets`` (tests)."""
    global _handler
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler = None
    structlog.reset_defaults()
    _identity.clear()
    clear_secrets()
