"""Redis and PostgreSQL URLs taken apart one way (redis-py's and SQLAlchemy's parsers):
defaults, decoded credentials, one ConfigError line naming the option, no password shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdb.errors import ConfigError
from cdb.runtime.up import env_from_urls
from cdb.urls import Endpoint, postgres_endpoint, redis_endpoint


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://h", Endpoint("h", 6379, "0", "", "")),
    ("redis://:p%40ss@h:6380/2", Endpoint("h", 6380, "2", "", "p@ss")),
    ("REDIS://H:1/0/", Endpoint("h", 1, "0", "", "")),
    ("rediss://user:pw@[::1]:7000/3", Endpoint("::1", 7000, "3", "user", "pw", tls=True)),
])
def test_a_redis_url(url: str, expected: Endpoint) -> None:
    assert redis_endpoint(url) == expected


@pytest.mark.parametrize("url", [
    "http://:pa55word-x@h:1", "redis://", "h:6379", "redis://:pa55word-x@h:notaport",
    "redis://h:0", "redis://:pa55word-x@h/abc", "redis://h/-1", "redis://h/1234567",
    "redis://h/1/2",
])
def test_a_bad_redis_url_is_one_line_naming_the_option(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        redis_endpoint(url, "--redis")
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("--redis: ")
    assert "pa55word-x" not in str(caught.value)


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://h", Endpoint("h", 5432, "cdb", "postgres", "")),
    ("postgres://u:p%40ss@h:5433/db", Endpoint("h", 5433, "db", "u", "p@ss")),
    ("postgresql+asyncpg://u@[::1]/", Endpoint("::1", 5432, "cdb", "u", "")),
])
def test_a_postgres_url(url: str, expected: Endpoint) -> None:
    assert postgres_endpoint(url) == expected


@pytest.mark.parametrize("url", [
    "mysql://u:pa55word-x@h/db", "postgresql://u:pa55word-x@h:x/db", "postgresql:///db",
])
def test_a_bad_postgres_url_is_one_line_naming_the_option(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        postgres_endpoint(url, "--postgres")
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("--postgres: ")
    assert "pa55word-x" not in str(caught.value)


def test_cdb_up_turns_the_urls_into_contract_variables_and_secret_files(tmp_path: Path) -> None:
    env = env_from_urls("redis://:r%2Fpw@rh:6390/1", "postgresql://pu:pg%40pw@ph:5440/pdb",
                        tmp_path)
    assert {k: v for k, v in env.items() if not k.endswith("_FILE")} == {
        "REDIS_HOST": "rh", "REDIS_PORT": "6390", "REDIS_DB": "1",
        "POSTGRES_HOST": "ph", "POSTGRES_PORT": "5440", "POSTGRES_USER": "pu",
        "POSTGRES_DB": "pdb",
    }
    assert Path(env["REDIS_PASSWORD_FILE"]).read_text() == "r/pw"
    assert Path(env["POSTGRES_PASSWORD_FILE"]).read_text() == "pg@pw"


def test_cdb_up_reports_both_bad_urls_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        env_from_urls("http://h", "mysql://h", tmp_path)
    assert [p.split(":")[0] for p in caught.value.problems] == ["--redis", "--postgres"]
