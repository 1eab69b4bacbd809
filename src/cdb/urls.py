"""URLs as people see them: never with their password.

Every URL cdb shows (the ``cdb run`` summary and its JSON, ``cdb status``, ``cdb ess``,
reports, error messages) goes through ``redact_url`` first. It parses with the
standard library's ``urlsplit``, which reads every scheme cdb meets (``redis://``,
``rediss://``, ``postgresql+asyncpg://``, ``sqlite+aiosqlite:///``, ``http://``), and
replaces only the password; a text that is not a URL comes back as it was.
Also: ``parse_port`` and ``check_url``, the command line's checks of user-given ports
and URLs, which fail with one ``ConfigError`` line naming the option; and
``redis_endpoint``/``postgres_endpoint``, the one way to take a Redis or PostgreSQL URL
apart (redis-py's and SQLAlchemy's own parsers).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Final, NamedTuple
from urllib.parse import SplitResult, urlsplit

from cdb.errors import ConfigError

MASK: Final = "***"
_CREDENTIALS: Final = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@", re.IGNORECASE
)
"""A fallback for text ``urlsplit`` cannot take apart (a URL inside a sentence)."""
POSTGRES_SCHEMES: Final = ("postgresql", "postgres", "postgresql+asyncpg")
"""The schemes of a PostgreSQL URL given on the command line."""


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``; the rest unchanged."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)
    if password is None:
        return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:{MASK}@{hostinfo}").geturl()


def parse_port(option: str, value: int | str, *, allow_zero: bool = False) -> int:
    """A TCP port given on the command line (``option`` names it in the error).

    Raises:
        ConfigError: not an integer within 1 (0 with ``allow_zero``) and 65535.
    """
    low = 0 if allow_zero else 1
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ConfigError([f"{option}: {value!r} is not a port number"]) from None
    if not low <= port <= 65535:
        raise ConfigError([f"{option}: {port} is not a port number ({low} to 65535)"])
    return port


def check_url(option: str, url: str, schemes: tuple[str, ...]) -> SplitResult:
    """``url`` taken apart, after checking its scheme, host and port.

    Raises:
        ConfigError: one line naming ``option`` and showing the URL without password.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigError([f"{option}: {shown!r} has no valid port (a number from 1 to "
                           "65535)"]) from None
    if parts.scheme.lower() not in schemes:
        raise ConfigError([f"{option}: {shown!r} is not a {' or '.join(schemes)} URL "
                           f"(e.g. {schemes[0]}://host:port)"])
    if not parts.hostname:
        raise ConfigError([f"{option}: {shown!r} has no host"])
    if port == 0:
        raise ConfigError([f"{option}: {shown!r}: port 0 is not a port to connect to"])
    return parts


def database_url(option: str, text: str) -> str:
    """A database URL given on the command line, or a SQLite file path as its URL.

    Raises:
        ConfigError: one line naming ``option``, the URL shown without its password.
    """
    if "://" not in text:
        return f"sqlite+aiosqlite:///{text}"
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(text)
        port = parsed.port
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError([f"{option}: {redact_url(text)!r} is not a database URL (e.g. "
                           "postgresql+asyncpg://user:pw@host:5432/db, or a SQLite file)"]
                          ) from None
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError([f"{option}: {redact_url(text)!r}: port {port} is not 1 to 65535"])
    if parsed.drivername.startswith("sqlite") and (parsed.host or parsed.username):
        raise ConfigError([f"{option}: {redact_url(text)!r}: a SQLite URL has no user or "
                           "host (sqlite+aiosqlite:///PATH)"])
    return text


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Endpoint(NamedTuple):
    """A server as a URL names it, credentials decoded ("" when not given)."""

    host: str
    port: int
    db: str
    """The database: a number for Redis, a name for PostgreSQL."""
    user: str
    password: str
    tls: bool = False


def redis_endpoint(url: str, option: str = "--redis") -> Endpoint:
    """``redis[s]://[[user]:password@]host[:port][/db]`` taken apart by redis-py's own
    ``parse_url``: port 6379 and database 0 when left out.

    Raises:
        ConfigError: one line naming ``option``, the URL shown without its password.
    """
    from redis.connection import SSLConnection, parse_url

    parts = check_url(option, url, ("redis", "rediss"))
    try:
        # check_url accepts the scheme in any case; redis-py only in lower case.
        found: dict[str, Any] = parse_url(  # type: ignore[no-untyped-call]
            f"{parts.scheme}:{url.partition(':')[2]}"
        )
    except ValueError as exc:
        raise ConfigError([f"{option}: {redact_url(url)!r}: {exc}"]) from None
    db_text = parts.path.strip("/") or "0"
    db = found.get("db", None if parts.path.strip("/") else 0)
    if db is None or not db_text.isdigit() or len(db_text) > 6:
        raise ConfigError([f"{option}: database {db_text[:20]!r} is not a number "
                           "(redis://host:port/0)"])
    return Endpoint(
        host=found.get("host", ""), port=found.get("port", 6379), db=str(db),
        user=found.get("username", ""), password=found.get("password", ""),
        tls=found.get("connection_class") is SSLConnection,
    )


def postgres_endpoint(url: str, option: str = "--postgres") -> Endpoint:
    """``postgresql[+asyncpg]://[user[:password]@]host[:port][/db]`` taken apart by
    SQLAlchemy's ``make_url``: port 5432, database ``cdb`` and user ``postgres`` when
    left out.

    Raises:
        ConfigError: one line naming ``option``, the URL shown without its password.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    check_url(option, url, POSTGRES_SCHEMES)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError([f"{option}: {redact_url(url)!r} is not a database URL (e.g. "
                           "postgresql://user:pw@host:5432/db)"]) from None
    return Endpoint(
        host=parsed.host or "", port=parsed.port or 5432, db=parsed.database or "cdb",
        user=parsed.username or "postgres", password=parsed.password or "",
    )
