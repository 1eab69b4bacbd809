"""Settings from the environment and secret files, with one clear error for all problems.

Every service reads the same variables (the contract table of the spec plus cdb's
own). Each part declares its own settings (``BusSettings``, ``StorageSettings``, ...,
in its package); ``Settings`` composes them, so every variable stays a flat field.
Secrets (``REDIS_PASSWORD``, ``POSTGRES_PASSWORD``, ``CDB_API_TOKEN``,
``BINANCE_API_KEY``, ``BINANCE_API_SECRET``) are read from ``<NAME>_FILE`` or from
``/run/secrets/<name>`` before the plain variable, and are ``SecretStr`` so they never
print. ``load_settings`` turns every validation problem into one ``ConfigError``
naming each variable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator

from cdb.bus.settings import BusSettings
from cdb.errors import ConfigError
from cdb.marketdata.settings import MarketSettings
from cdb.risk.settings import RiskSettings
from cdb.storage.settings import StorageSettings
from cdb.strategies.settings import SignalSettings
from cdb.venues.settings import VenueSettings

SECRETS_DIR_ENV = "CDB_SECRETS_DIR"
DEFAULT_SECRETS_DIR = "/run/secrets"
SECRET_FIELDS = (
    "redis_password", "postgres_password", "database_url", "cdb_api_token", "binance_api_key",
    "binance_api_secret",
)
MIN_TOKEN_LEN = 16
SERVICE_PORTS = {"ws": 8000, "signal": 8005, "risk": 8002, "execution": 8003, "db_writer": 8004}
"""Contract ports of the service APIs (db_writer has none in the contract)."""


class Settings(VenueSettings, MarketSettings, RiskSettings, SignalSettings, StorageSettings,
               BusSettings):
    """All settings of cdb: every part's (validated from the last base to the first, then
    these), plus the process's own; field ``x_y`` is variable ``X_Y``."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    environment: str = "development"
    bind_host: str = "127.0.0.1"

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

    cdb_api_token: SecretStr | None = None

    @field_validator("log_level", mode="before")
    @classmethod
    def _any_case_level(cls, value: object) -> object:
        # The seeds write both LOG_LEVEL=info and LOG_LEVEL=INFO.
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("cdb_api_token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and 0 < len(value.get_secret_value()) < MIN_TOKEN_LEN:
            raise ValueError(
                f"must be at least {MIN_TOKEN_LEN} characters (it guards the kill switch); "
                "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value

    def shard_symbols(self) -> tuple[str, ...]:
        return tuple(s.strip().upper() for s in self.cdb_shard_symbols.split(",") if s.strip())

    def postgres_schema(self) -> str | None:
        """Postgres schema of this namespace (None: the default schema)."""
        name = self.service_instance_name
        if not name:
            return None
        return "cdb_" + name.replace("-", "_")  # one-to-one: NAMESPACE_PATTERN has no "_"

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
