"""JSON log lines: identity and timestamp on every line, correlation ids while a batch is
handled, and no secret anywhere, whichever way it reaches the log."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import structlog

from cdb.config import load_settings
from cdb.observability import logging as cdb_logging
from cdb.observability.logging import MASK, correlation_fields, handling, mask_text, mask_value

SECRETS = ("hunter2-redis", "pg-s3cret-pw", "tok-abcdef123456", "binance-key-XYZ987",
           "binance-secret-QRS654")


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    """Logs of this test as JSON lines in a buffer; everything undone afterwards."""
    buffer = io.StringIO()
    cdb_logging.configure("DEBUG", stream=buffer)
    cdb_logging.bind_process(service="risk", instance="risk-1")
    try:
        yield buffer
    finally:
        cdb_logging.reset()


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked in {text}"


@pytest.mark.parametrize(
    ("text", "hidden", "kept"),
    [
        ("redis://:hunter2-redis@10.0.0.1:6379/0", "hunter2-redis", "redis://:***@10.0.0.1"),
        ("postgresql+asyncpg://cdb:pg-s3cret-pw@db:5432/cdb", "pg-s3cret-pw", "cdb:***@db"),
        ("connect failed password=pg-s3cret-pw host=db", "pg-s3cret-pw", "host=db"),
        ('{"api_key": "binance-key-XYZ987"}', "binance-key-XYZ987", '"api_key": "***"'),
        ("GET /api/v3/order?symbol=BTCUSDT&signature=binance-secret-QRS654&ts=1",
         "binance-secret-QRS654", "&ts=1"),
        ("Authorization: Bearer tok-abcdef123456", "tok-abcdef123456", "Bearer ***"),
        ("X-MBX-APIKEY: binance-key-XYZ987", "binance-key-XYZ987", "X-MBX-APIKEY: ***"),
    ],
)
def test_mask_text_hides_credentials_in_urls_pairs_and_headers(
    text: str, hidden: str, kept: str
) -> None:
    masked = mask_text(text)
    assert hidden not in masked
    assert kept in masked


def test_a_registered_secret_is_masked_wherever_it_appears() -> None:
    cdb_logging.register_secrets(["hunter2-redis", "ab", None])
    try:
        assert mask_text("AUTH failed for hunter2-redis (x)") == f"AUTH failed for {MASK} (x)"
        assert mask_text("ab stays: too short to mask blindly") == (
            "ab stays: too short to mask blindly")
    finally:
        cdb_logging.clear_secrets()


def test_mask_value_walks_nested_structures_and_secret_keys() -> None:
    value = {"db": {"url": "postgresql://u:pg-s3cret-pw@h/db", "password": "x"},
             "list": ["redis://:hunter2-redis@h:1"], "n": 3, "ok": True}
    masked = mask_value(value)
    assert_no_secret(json.dumps(masked))
    assert isinstance(masked, dict)
    assert masked["db"]["password"] == MASK
    assert masked["n"] == 3


def test_every_line_is_json_with_timestamp_level_service_instance(out: io.StringIO) -> None:
    structlog.get_logger("cdb.bus.buffered").warning("buffering", events=3)
    structlog.get_logger().info("plain")
    logging.getLogger("uvicorn.error").error("stdlib line %s", "too")
    got = lines(out)
    assert len(got) == 3
    for line in got:
        assert {"timestamp", "level", "service", "instance", "event"} <= line.keys()
        assert line["service"] == "risk"
        assert line["instance"] == "risk-1"
        assert str(line["timestamp"]).endswith("Z")
    assert got[2]["event"] == "stdlib line too"
    assert got[2]["level"] == "error"


def test_a_line_bound_to_its_own_service_keeps_it(out: io.StringIO) -> None:
    structlog.get_logger(service="ws", instance="ws-7").info("mine")
    (line,) = lines(out)
    assert (line["service"], line["instance"]) == ("ws", "ws-7")


def test_secrets_from_settings_errors_and_urls_never_reach_the_output(
    out: io.StringIO, tmp_path: object
) -> None:
    settings = load_settings(environ={
        "REDIS_HOST": "r", "REDIS_PASSWORD": "hunter2-redis", "POSTGRES_HOST": "p",
        "POSTGRES_USER": "cdb", "POSTGRES_PASSWORD": "pg-s3cret-pw",
        "CDB_API_TOKEN": "tok-abcdef123456", "BINANCE_API_KEY": "binance-key-XYZ987",
        "BINANCE_API_SECRET": "binance-secret-QRS654", "CDB_SECRETS_DIR": str(tmp_path),
    })
    from cdb.runtime.observer import register_settings_secrets

    register_settings_secrets(settings)
    log = structlog.get_logger()
    log.info("settings", settings=settings, redis=settings.redis_url(),
             db=settings.postgres_url())
    log.warning("config", redis_password=settings.redis_password, token="tok-abcdef123456")
    try:
        raise ConnectionError(f"cannot reach {settings.redis_url()} (pw hunter2-redis)")
    except ConnectionError:
        log.exception("redis down")
    log.error("failed", error=RuntimeError("AUTH binance-secret-QRS654 rejected"))
    logging.getLogger("alembic").warning("dsn %s", settings.postgres_url())
    logging.getLogger("x").error("boom", exc_info=ValueError("pg-s3cret-pw"))
    text = out.getvalue()
    assert len(lines(out)) == 6
    assert_no_secret(text)
    assert "Traceback" in text  # the exception is there, masked, not dropped


def test_a_bad_setting_names_the_variable_without_its_secret_value(tmp_path: object) -> None:
    from cdb.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_settings(environ={"REDIS_PASSWORD": "hunter2-redis", "REDIS_PORT": "nope",
                               "CDB_SECRETS_DIR": str(tmp_path)})
    assert "REDIS_PORT" in str(info.value)
    assert_no_secret(str(info.value))


@dataclass
class Ev:
    correlation_id: str


@dataclass
class B:
    events: list[Ev]


def test_correlation_fields_one_id_or_the_distinct_ids() -> None:
    assert correlation_fields([B([Ev("c1"), Ev("c1")])]) == {"correlation_id": "c1"}
    many = correlation_fields([B([Ev(f"c{i}") for i in range(30)]), B([Ev("c0")])])
    assert many["correlation_ids_total"] == 30
    assert len(many["correlation_ids"]) == 20  # type: ignore[arg-type]
    assert correlation_fields([B([Ev("")])]) == {}


def test_lines_logged_while_handling_carry_the_correlation_id(out: io.StringIO) -> None:
    log = structlog.get_logger()
    with handling([B([Ev("trade-1")])]):
        log.info("inside")
        log.info("explicit", correlation_id="other")
    log.info("after")
    inside, explicit, after = lines(out)
    assert inside["correlation_id"] == "trade-1"
    assert explicit["correlation_id"] == "other"
    assert "correlation_id" not in after


async def test_an_alert_is_logged_at_its_own_level(out: io.StringIO) -> None:
    from tests.unit.services.risk_harness import RecordingBus

    from cdb.clock import SimClock
    from cdb.services.base import ServiceContext

    ctx = ServiceContext(name="ws", instance="ws-1", bus=RecordingBus(),  # type: ignore[arg-type]
                         clock=SimClock(0))
    await ctx.alert("info", "market_data_end", "the replay is over")
    await ctx.alert("warning", "stale_feed", "no trade for 30 s")
    await ctx.alert("critical", "ess_tripped", "flash crash")
    levels = {line["code"]: line["level"] for line in lines(out) if line.get("event") == "alert"}
    assert levels == {"market_data_end": "info", "stale_feed": "warning",
                      "ess_tripped": "critical"}
