"""Settings from the environment: contract defaults, secrets files, one report of every
problem, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdb.config import load_settings
from cdb.errors import ConfigError


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    # An empty secrets directory, so the machine's /run/secrets never leaks in.
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    return {"CDB_SECRETS_DIR": str(secrets), **extra}


def test_contract_defaults(tmp_path: Path) -> None:
    settings = load_settings(environ=_env(tmp_path))
    assert settings.signal_threshold_pct == 3.0
    assert settings.signal_min_volume == 100_000
    assert settings.log_level == "INFO"
    assert settings.redis_url().startswith("redis://")
    assert [settings.port_of(s) for s in ("ws", "signal", "risk", "execution", "db_writer")] == [
        8000, 8005, 8002, 8003, 8004]


def test_signal_port_is_taken_from_the_given_environment(tmp_path: Path) -> None:
    settings = load_settings(environ=_env(tmp_path, SIGNAL_PORT="8001"))
    assert settings.port_of("signal") == 8001


def test_a_secret_file_wins_over_the_plain_variable(tmp_path: Path) -> None:
    secret = tmp_path / "redis_password"
    secret.write_text("from-the-file\n")
    env = _env(tmp_path, REDIS_PASSWORD="plain", REDIS_PASSWORD_FILE=str(secret))
    settings = load_settings(environ=env)
    assert settings.redis_password is not None
    assert settings.redis_password.get_secret_value() == "from-the-file"


def test_the_secrets_directory_is_read(tmp_path: Path) -> None:
    env = _env(tmp_path)
    (Path(env["CDB_SECRETS_DIR"]) / "postgres_password").write_text("pg-secret")
    settings = load_settings(environ=env)
    assert settings.postgres_password is not None
    assert settings.postgres_password.get_secret_value() == "pg-secret"


def test_every_problem_is_reported_at_once_and_no_secret_is_shown(tmp_path: Path) -> None:
    env = _env(
        tmp_path,
        REDIS_PORT="not-a-port",
        SIGNAL_THRESHOLD_PCT="-1",
        LOG_LEVEL="LOUD",
        POSTGRES_PASSWORD_FILE=str(tmp_path / "missing"),
        DATABASE_URL="postgresql+asyncpg://u:hunter2@h/db",
        BINANCE_API_SECRET="s3cret-value",
        CDB_API_TOKEN="x" * 2,
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=env)
    text = str(caught.value)
    for name in ("REDIS_PORT", "SIGNAL_THRESHOLD_PCT", "LOG_LEVEL", "POSTGRES_PASSWORD_FILE"):
        assert name in text, text
    assert "does not exist" in text
    assert "hunter2" not in text
    assert "s3cret-value" not in text


def test_distributed_mode_names_what_is_missing(tmp_path: Path) -> None:
    settings = load_settings(environ=_env(tmp_path))
    problems = "\n".join(settings.distributed_problems())
    for name in ("REDIS_PASSWORD", "POSTGRES_HOST", "POSTGRES_USER", "POSTGRES_PASSWORD",
                 "SIGNAL_STRATEGY_ID"):
        assert name in problems
    assert "SIGNAL_STRATEGY_ID" not in "\n".join(settings.distributed_problems("risk"))
