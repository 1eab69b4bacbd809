"""Settings from the environment and secret files, with one clear error for all problems.

Every service reads the same variables (the contract table of the spec plus cdb's
own). Secrets (``REDIS_PASSWORD``, ``POSTGRES_PASSWORD``, ``CDB_API_TOKEN``,
``BINANCE_API_KEY``, ``BINANCE_API_SECRET``) are read from ``<NAME>_FILE`` or from
``/run/secrets/<name>`` before the plain variable, and are ``SecretStr`` so they never
print. ``load_settings`` turns every validation problem into one ``ConfigError``
naming each variable.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import msgspec
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cdb.errors import ConfigError
from cdb.events import SCALE
from cdb.marketdata.synthetic import Shape
from cdb.risk.ess import EssConfig, pct_to_ppm
from cdb.risk.limits import RiskLimits
from cdb.strategies.base import StrategyParams

SECRETS_DIR_ENV = "CDB_SECRETS_DIR"
DEFAULT_SECRETS_DIR = "/run/secrets"
SECRET_FIELDS = (
    "redis_password", "postgres_password", "database_url", "cdb_api_token", "binance_api_key",
    "binance_api_secret",
)
NAMESPACE_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,57}[a-z0-9])?$")
"""A namespace: lowercase letters, digits and inner hyphens, at most 59 characters.
The PostgreSQL schema is ``cdb_`` plus the name with ``-`` as ``_``; with no ``_``,
no upper case and no other character allowed, two namespaces never share a schema
(``prod-1``, ``prod_1`` and ``PROD.1`` used to), and ``cdb_`` + 59 fits PostgreSQL's
63-byte identifiers."""
MIN_TOKEN_LEN = 16
SERVICE_PORTS = {"ws": 8000, "signal": 8005, "risk": 8002, "execution": 8003, "db_writer": 8004}
"""Contract ports of the service APIs (db_writer has none in the contract)."""


class Settings(BaseSettings):
    """All settings of cdb; field ``x_y`` is variable ``X_Y``."""

    # allow_inf_nan=False: RISK_MAX_POSITION=inf or ESS_COOLDOWN_S=nan is refused at start,
    # naming the setting, instead of failing later (or never tripping) in arithmetic.
    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False,
                                      allow_inf_nan=False)

    service_instance_name: str = ""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    environment: str = "development"
    bind_host: str = "127.0.0.1"

    redis_host: str | None = None
    redis_port: int = Field(6379, ge=1, le=65535)
    redis_db: int = Field(0, ge=0)
    redis_password: SecretStr | None = None
    redis_sentinels: str = ""
    """Comma-separated ``host:port`` of Redis Sentinels; with it, ``redis_master``."""
    redis_master: str = "mymaster"
    redis_socket_timeout_s: float = Field(5.0, gt=0)
    """Longest wait for one Redis reply (a blackholed Redis fails after this)."""
    redis_retries: int = Field(1, ge=0)
    """redis-py retries of one command on a connection error, spaced by the backoff."""
    redis_min_replicas: int = Field(0, ge=0)
    """With replicas (Sentinel): a publish counts only once this many replicas have it
    (WAIT); otherwise it is buffered and retried, so a failover loses nothing."""
    redis_replica_timeout_s: float = Field(1.0, gt=0)
    """How long a publish waits for REDIS_MIN_REPLICAS."""
    redis_sentinel_poll_s: float = Field(1.0, gt=0)
    """How often the Sentinels are asked where the master is (a failover is followed
    within this)."""

    postgres_host: str | None = None
    postgres_port: int = Field(5432, ge=1, le=65535)
    postgres_user: str | None = None
    postgres_password: SecretStr | None = None
    postgres_db: str = "cdb"
    database_url: SecretStr | None = None
    """Full SQLAlchemy URL; overrides the POSTGRES_* variables."""

    signal_strategy_id: str | None = None
    signal_port: int = Field(8001, ge=1, le=65535)
    signal_threshold_pct: float = Field(3.0, gt=0, le=100)
    signal_min_volume: float = Field(100_000.0, ge=0)
    signal_lookback_s: float = Field(60.0, gt=0)

    risk_order_notional: float = Field(1_000.0, gt=0)
    risk_max_order_notional: float = Field(5_000.0, gt=0)
    risk_max_position: float = Field(5_000.0, gt=0)
    risk_max_exposure: float = Field(20_000.0, gt=0)
    risk_max_open_orders: int = Field(5, ge=1)
    risk_max_orders_per_window: int = Field(10, ge=1)
    risk_rate_window_s: float = Field(10.0, gt=0)
    risk_initial_cash: float = Field(100_000.0, gt=0)

    ess_drawdown_limit_pct: float = Field(10.0, gt=0, le=100)
    """The ESS trips when equity is more than this below its peak."""
    ess_flash_crash_pct: float = Field(15.0, gt=0, le=100)
    ess_flash_crash_window_s: float = Field(60.0, gt=0)
    """The ESS trips when a price falls at least ESS_FLASH_CRASH_PCT within this."""
    ess_error_burst_count: int = Field(5, ge=1)
    ess_error_burst_window_s: float = Field(60.0, gt=0)
    """The ESS trips on ESS_ERROR_BURST_COUNT exchange errors or rejections within this."""
    ess_stale_data_s: float = Field(30.0, ge=0)
    """New orders on a symbol without a trade for longer pause until it trades again
    (0: the stale-data guard is off, pause and trip)."""
    ess_stale_halt_s: float = Field(300.0, ge=0)
    """The ESS trips (latched) when a symbol stays silent this long while the bus is
    up; time cdb's own Redis was down does not count (0: never)."""
    ess_cooldown_s: float = Field(300.0, ge=0)
    """A reset is refused until this long after the trip."""

    paper_taker_fee_bps: int = Field(10, ge=0, le=1000)
    paper_maker_fee_bps: int = Field(2, ge=0, le=1000)
    paper_slippage_bps: int = Field(5, ge=0, le=1000)

    ws_source: Literal["synthetic", "replay", "binance"] = "synthetic"
    """binance: live trade streams of WS_SYMBOLS (at BINANCE_URL when set)."""
    ws_seed: int = 7
    ws_symbols: str = "BTCUSDT,ETHUSDT,SOLUSDT"
    ws_duration_s: float = Field(86_400.0, gt=0)
    ws_speed: str = "realtime"
    """max (as fast as consumers keep up), realtime, or a factor such as 60."""
    ws_replay: str = ""
    """Comma-separated replay files (WS_SOURCE=replay)."""
    ws_start_ns: int | None = Field(None, ge=0)
    """Event time (ns since the epoch) at which the synthetic market starts. Unset: now
    for a paced market (realtime or a factor), 2024-01-01 for ``max``. When set and the
    market is paced, each trade is published once the wall clock reaches its time (its
    offset from this start divided by the speed): a start in the past is caught up at
    once, one in the future is waited for. This is how a coordinator lines the market
    up with its own timeline."""
    ws_trades_per_s: float = Field(50.0, gt=0)
    """Synthetic market: mean trades per second over all symbols."""
    ws_bursts_per_hour: float = Field(2.0, ge=0)
    """Synthetic market: natural momentum moves per symbol per hour (0: none)."""
    ws_shapes: str = ""
    """Synthetic market: shapes to inject, a JSON array of objects ``{"kind":
    "flash_crash"|"spike"|"gap"|"flat"|"stale", "symbol": "BTCUSDT" or "*", "at_s":
    seconds after the market's start, "duration_s": ..., "magnitude_pct": ...}`` (see
    ``cdb.marketdata.synthetic.Shape``); empty: none."""

    cdb_port_ws: int | None = Field(None, ge=1, le=65535)
    cdb_port_signal: int | None = Field(None, ge=1, le=65535)
    cdb_port_risk: int | None = Field(None, ge=1, le=65535)
    cdb_port_execution: int | None = Field(None, ge=1, le=65535)
    cdb_port_db_writer: int | None = Field(None, ge=1, le=65535)
    """Per-service port overrides (several pipelines on one host, tests)."""

    cdb_shard: str = ""
    """Shard of a stateful service (signal, risk): its own consumer group."""
    cdb_shard_symbols: str = ""
    """Comma-separated symbols this shard owns (empty: all)."""

    cdb_consumer: str = ""
    """Consumer name in the groups (default: service-hostname); stable across restarts."""
    cdb_claim_idle_s: float = Field(30.0, gt=0)
    cdb_drain_timeout_s: float = Field(10.0, gt=0)

    cdb_backoff_base_s: float = Field(1.0, gt=0)
    """Retries wait 1, 2, 4, 8, 16 ... s (this, doubling), less up to CDB_BACKOFF_JITTER."""
    cdb_backoff_cap_s: float = Field(30.0, gt=0)
    """Longest wait between retries."""
    cdb_backoff_jitter: float = Field(0.2, ge=0, le=1)
    """Fraction of each wait taken off at random, so processes do not retry in step."""
    cdb_breaker_failures: int = Field(3, ge=1)
    """Consecutive Redis failures that open the circuit breaker."""
    cdb_breaker_open_s: float = Field(60.0, gt=0)
    """How long the breaker stays open before one trial call (half-open)."""
    cdb_buffer_dir: str = ""
    """Directory of the producers' disk buffers (default $XDG_STATE_HOME/cdb, else
    ~/.local/state/cdb); one file per namespace and instance. Keep it on a volume."""
    cdb_buffer_path: str = ""
    """The disk buffer file itself (overrides CDB_BUFFER_DIR; one process per file)."""
    cdb_buffer_max_events: int = Field(1_000_000, ge=1)
    cdb_buffer_max_bytes: int = Field(256 * 1024 * 1024, ge=1)
    """Bounds of the disk buffer; at either one CDB_BUFFER_FULL_POLICY applies."""
    cdb_buffer_full_policy: Literal["block", "reject"] = "block"
    """block: publishers wait for the flush (nothing dropped); reject: publish fails."""
    cdb_db_write_timeout_s: float = Field(30.0, gt=0)
    """db_writer gives up one write after this (a blackholed database) and retries."""

    cdb_grpc_port: int | None = Field(None, ge=0, le=65535)
    """Port of the gRPC health service (grpc.health.v1) of a service process; off when
    unset. Under ``cdb up`` give each service its own: CDB_GRPC_PORT_<SERVICE>."""
    cdb_grpc_port_ws: int | None = Field(None, ge=0, le=65535)
    cdb_grpc_port_signal: int | None = Field(None, ge=0, le=65535)
    cdb_grpc_port_risk: int | None = Field(None, ge=0, le=65535)
    cdb_grpc_port_execution: int | None = Field(None, ge=0, le=65535)
    cdb_grpc_port_db_writer: int | None = Field(None, ge=0, le=65535)
    cdb_metrics_port: int | None = Field(None, ge=1, le=65535)
    """``cdb run``: serve /metrics and /health of the embedded pipeline on this port."""
    cdb_monitor_interval_s: float = Field(5.0, gt=0)
    """Seconds between health checks and stream samples (cdb_redis_up, consumer lag)."""
    cdb_discovery_ttl_s: float = Field(15.0, gt=0)
    """An instance whose discovery heartbeat is older than this is shown as gone."""
    cdb_restarts: int = Field(0, ge=0)
    """Times the supervisor (``cdb up``) restarted this service: it sets this for each
    child; advertised in discovery, where the console shows it."""
    cdb_advertise_host: str = ""
    """Host other machines reach this instance at (discovery); default: BIND_HOST, or
    the host name when binding every interface."""

    execution_venue: Literal["paper", "binance-testnet", "binance-live"] = "paper"
    """Where execution places orders; binance-live trades real money (named explicitly)."""
    binance_url: str | None = None
    """Base URL of Binance's REST API and trade streams instead of the venue's own (a
    FakeBinance in tests: one ``http://`` URL serves both)."""
    binance_resolve_window_s: float = Field(10.0, gt=0)
    """An order whose submission outcome is unknown, not found this long after it was
    sent, never reached the venue (it is then sent once more, never twice)."""

    cdb_api_token: SecretStr | None = None
    binance_api_key: SecretStr | None = None
    binance_api_secret: SecretStr | None = None

    def strategy_params(self, default_id: str | None = None) -> StrategyParams:
        return StrategyParams(
            strategy_id=self.signal_strategy_id or default_id or "",
            threshold_pct=self.signal_threshold_pct,
            min_volume=self.signal_min_volume,
            lookback_s=self.signal_lookback_s,
        )

    @field_validator("log_level", mode="before")
    @classmethod
    def _any_case_level(cls, value: object) -> object:
        # The seeds write both LOG_LEVEL=info and LOG_LEVEL=INFO.
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("service_instance_name")
    @classmethod
    def _valid_namespace(cls, value: str) -> str:
        if value and not NAMESPACE_PATTERN.fullmatch(value):
            raise ValueError(
                "use lowercase letters, digits and inner hyphens, at most 59 characters "
                "(e.g. prod-1): each name must map to its own PostgreSQL schema"
            )
        return value

    @field_validator("cdb_api_token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and 0 < len(value.get_secret_value()) < MIN_TOKEN_LEN:
            raise ValueError(
                f"must be at least {MIN_TOKEN_LEN} characters (it guards the kill switch); "
                "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value

    @field_validator("ws_shapes")
    @classmethod
    def _valid_shapes(cls, value: str) -> str:
        _decode_shapes(value)  # a bad shape stops the service at start, naming WS_SHAPES
        return value

    def market_shapes(self) -> tuple[Shape, ...]:
        """The synthetic market's shapes (``WS_SHAPES``)."""
        return _decode_shapes(self.ws_shapes)

    def symbols(self) -> tuple[str, ...]:
        return tuple(s.strip().upper() for s in self.ws_symbols.split(",") if s.strip())

    def shard_symbols(self) -> tuple[str, ...]:
        return tuple(s.strip().upper() for s in self.cdb_shard_symbols.split(",") if s.strip())

    def postgres_schema(self) -> str | None:
        """Postgres schema of this namespace (None: the default schema)."""
        name = self.service_instance_name
        if not name:
            return None
        return "cdb_" + name.replace("-", "_")  # one-to-one: NAMESPACE_PATTERN has no "_"

    def risk_limits(self) -> RiskLimits:
        return RiskLimits(
            order_notional_e8=round(self.risk_order_notional * SCALE),
            max_order_notional_e8=round(self.risk_max_order_notional * SCALE),
            max_position_e8=round(self.risk_max_position * SCALE),
            max_exposure_e8=round(self.risk_max_exposure * SCALE),
            max_open_orders=self.risk_max_open_orders,
            max_orders_per_window=self.risk_max_orders_per_window,
            rate_window_ns=round(self.risk_rate_window_s * 1e9),
        )

    def ess_config(self) -> EssConfig:
        return EssConfig(
            drawdown_limit_ppm=pct_to_ppm(self.ess_drawdown_limit_pct),
            flash_crash_drop_ppm=pct_to_ppm(self.ess_flash_crash_pct),
            flash_crash_window_ns=round(self.ess_flash_crash_window_s * 1e9),
            error_burst_count=self.ess_error_burst_count,
            error_burst_window_ns=round(self.ess_error_burst_window_s * 1e9),
            stale_after_ns=round(self.ess_stale_data_s * 1e9),
            stale_halt_after_ns=round(self.ess_stale_halt_s * 1e9),
            cooldown_ns=round(self.ess_cooldown_s * 1e9),
        )

    def port_of(self, service: str) -> int:
        """HTTP port of ``service``: ``CDB_PORT_<SERVICE>``, then ``SIGNAL_PORT`` for signal
        when set, then the contract port."""
        override: int | None = getattr(self, f"cdb_port_{service}", None)
        if override is not None:
            return override
        if service == "signal" and "signal_port" in self.model_fields_set:
            return self.signal_port
        return SERVICE_PORTS[service]

    def grpc_port_of(self, service: str) -> int | None:
        """gRPC health port of ``service``: CDB_GRPC_PORT_<SERVICE>, then CDB_GRPC_PORT;
        None: off."""
        override: int | None = getattr(self, f"cdb_grpc_port_{service}", None)
        return override if override is not None else self.cdb_grpc_port

    def redis_url(self) -> str:
        """``redis://`` URL of the configured Redis (password included; never log it)."""
        auth = ""
        if self.redis_password is not None and self.redis_password.get_secret_value():
            auth = f":{quote(self.redis_password.get_secret_value(), safe='')}@"
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"

    def postgres_url(self) -> str:
        """SQLAlchemy URL of the configured PostgreSQL (password included; never log it)."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        auth = quote(self.postgres_user or "", safe="")
        if self.postgres_password is not None and self.postgres_password.get_secret_value():
            auth += ":" + quote(self.postgres_password.get_secret_value(), safe="")
        return (
            f"postgresql+asyncpg://{auth}@{self.postgres_host}:{self.postgres_port}/"
            f"{self.postgres_db}"
        )

    def distributed_problems(self, service: str | None = None) -> list[str]:
        """What the distributed mode requires and is missing (contract 'required')."""
        problems = []
        if not self.redis_host and not self.redis_sentinels:
            problems.append("REDIS_HOST: required in distributed mode (or REDIS_SENTINELS)")
        if self.redis_password is None:
            problems.append(
                "REDIS_PASSWORD: required in distributed mode (secret file "
                "/run/secrets/redis_password, REDIS_PASSWORD_FILE or REDIS_PASSWORD)"
            )
        if self.database_url is None:
            if not self.postgres_host:
                problems.append("POSTGRES_HOST: required in distributed mode")
            if not self.postgres_user:
                problems.append("POSTGRES_USER: required in distributed mode")
            if self.postgres_password is None:
                problems.append(
                    "POSTGRES_PASSWORD: required in distributed mode (secret file "
                    "/run/secrets/postgres_password, POSTGRES_PASSWORD_FILE or POSTGRES_PASSWORD)"
                )
        if service in (None, "signal") and not self.signal_strategy_id:
            problems.append("SIGNAL_STRATEGY_ID: required in distributed mode (e.g. momentum)")
        return problems


def _decode_shapes(text: str) -> tuple[Shape, ...]:
    """``WS_SHAPES`` as shapes; ValueError says what is wrong."""
    if not text.strip():
        return ()
    try:
        return msgspec.json.decode(text, type=tuple[Shape, ...])
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a JSON array of shapes ({exc}); e.g. "
                         '[{"kind": "flash_crash", "symbol": "BTCUSDT", "at_s": 15, '
                         '"duration_s": 60, "magnitude_pct": 15}]') from None


def _read_secrets(environ: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Secret values from ``*_FILE`` variables and the secrets directory."""
    found: dict[str, str] = {}
    problems: list[str] = []
    secrets_dir = Path(environ.get(SECRETS_DIR_ENV, DEFAULT_SECRETS_DIR))
    for name in SECRET_FIELDS:
        var = f"{name.upper()}_FILE"
        path = Path(environ[var]) if var in environ else secrets_dir / name
        try:
            found[name] = path.read_text().strip()
        except FileNotFoundError:
            if var in environ:
                problems.append(f"{var}: file {path} does not exist")
        except OSError as exc:
            where = var if var in environ else name
            problems.append(f"{where}: cannot read {path}: {exc.strerror}")
    return found, problems


def load_settings(
    overrides: dict[str, object] | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Read settings; raise one ``ConfigError`` naming every problem.

    Args:
        overrides: values from the command line (highest precedence).
        environ: the environment (default ``os.environ``).
    """
    env = dict(os.environ if environ is None else environ)
    secrets, problems = _read_secrets(env)
    values: dict[str, object] = {**secrets, **(overrides or {})}
    try:
        # Pass the environment explicitly so tests and `environ=` see the same thing.
        settings = _from_env(env, values)
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            shown = "" if field in SECRET_FIELDS else f" (got {_short(err.get('input'))})"
            message = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{field.upper()}: {message}{shown}")
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return settings


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _from_env(env: dict[str, str], values: dict[str, object]) -> Settings:
    fields = Settings.model_fields
    merged: dict[str, object] = {
        key.lower(): value for key, value in env.items() if key.lower() in fields
    }
    merged.update(values)
    return Settings.model_validate(merged)
