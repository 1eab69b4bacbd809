"""`cdb status` rows and table: live instances with their health, gone ones marked."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from cdb.cli_status import InstanceStatus, _row, healthy_enough, redis_from_url, table
from cdb.errors import ConfigError
from cdb.runtime.discovery import InstanceRecord, Registration

NOW = 1_800_000_000 * 10**9


def registration(service: str, *, alive: bool = True, seen_s_ago: float = 1.0) -> Registration:
    record = InstanceRecord(
        service=service, instance=f"{service}-1", address="http://127.0.0.1:8000",
        version="0.1.0", started="2027-01-15T08:00:00+00:00", started_ns=NOW - 60 * 10**9,
        last_seen_ns=NOW - int(seen_s_ago * 1e9),
    )
    return Registration(record=record, alive=alive, ttl_left_s=5.0 if alive else None)


def test_a_live_instance_shows_its_health() -> None:
    row = _row(registration("risk"), "degraded", "redis: refused", NOW)
    assert (row.state, row.health, row.note) == ("live", "degraded", "redis: refused")
    assert row.last_seen_s == 1.0
    assert row.uptime_s == 60.0


def test_an_expired_heartbeat_is_gone_whatever_was_answered() -> None:
    row = _row(registration("ws", alive=False, seen_s_ago=42), "healthy", "", NOW)
    assert (row.state, row.health) == ("gone", "gone")
    assert "heartbeat expired (42 s" in row.note


def test_an_instance_not_answering_is_gone() -> None:
    row = _row(registration("ws"), "gone", "not answering: ConnectError", NOW)
    assert row.state == "gone"


def rows(*healths: str) -> list[InstanceStatus]:
    return [_row(registration(f"s{i}"), h, "", NOW) for i, h in enumerate(healths)]


@pytest.mark.parametrize(
    ("healths", "ok"),
    [(("healthy", "degraded"), True), (("healthy", "unhealthy"), False),
     (("healthy", "gone"), False), ((), False)],
)
def test_healthy_enough_decides_the_exit_code(healths: tuple[str, ...], ok: bool) -> None:
    assert healthy_enough(rows(*healths)) is ok


def test_the_table_lists_every_instance() -> None:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(table(rows("healthy", "gone"), "ns1"))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "namespace ns1, session session-ns1" in text, "the run id of its rows"
    assert "s0-1" in text
    assert "healthy" in text
    assert "gone" in text
    assert "60 s" in text  # up since a minute


@pytest.mark.parametrize("url", ["http://h:1", "redis://", "h:6379"])
def test_a_bad_redis_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="--redis"):
        redis_from_url(url)


def test_a_redis_url_error_never_shows_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        redis_from_url("http://:pa55word-x@h:1")
    assert "pa55word-x" not in str(info.value)


def render(rows: list[InstanceStatus], *, width: int, wide: bool = False) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(table(rows, "prod-eu", wide=wide, width=width))
    return console.file.getvalue()  # type: ignore[attr-defined,no-any-return]


def test_the_table_fits_80_columns_with_whole_words_for_what_matters() -> None:
    """Names, health, uptime and heartbeat are never cut; a long note ends in an ellipsis."""
    listed = [_row(registration("db_writer"), "unhealthy",
                   "redis: Error 111 connecting to 127.0.0.1:6379. Connection refused.", NOW),
              _row(registration("execution"), "degraded", "", NOW)]
    text = render(listed, width=80)
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    for word in ("db_writer-1", "execution-1", "unhealthy", "degraded", "60 s", "1 s ago",
                 "heartbeat"):
        assert word in text
    assert "…" in text
    assert "http://" not in text  # addresses are for --wide


def test_wide_shows_every_column_uncut() -> None:
    note = "redis: Error 111 connecting to 127.0.0.1:6379. Connection refused."
    text = render([_row(registration("risk"), "unhealthy", note, NOW)], width=400, wide=True)
    for word in ("address", "grpc", "version", "state", "http://127.0.0.1:8000", "0.1.0", note):
        assert word in text
