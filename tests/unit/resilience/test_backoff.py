"""The backoff policy: 1, 2, 4, 8, 16, then 30 s, shortened by jitter, never longer."""

import random

import pytest
import redis.asyncio.retry as redis_retry
from redis.exceptions import ConnectionError as RedisConnectionError

from cdb.bus.redis import backoff_of
from cdb.config import load_settings
from cdb.errors import ConfigError
from cdb.resilience.backoff import Backoff


def test_default_delays_double_from_one_second_to_a_thirty_second_cap() -> None:
    backoff = Backoff()
    assert [backoff.nominal(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff.nominal(10_000) == 30


def test_jitter_only_shortens_a_delay_by_at_most_its_fraction() -> None:
    backoff = Backoff(base=1.0, cap=30.0, jitter=0.2, rng=random.Random(1))
    for failures in range(1, 10):
        nominal = backoff.nominal(failures)
        delays = [backoff.compute(failures) for _ in range(200)]
        assert all(0.8 * nominal <= d <= nominal for d in delays)
        assert max(delays) - min(delays) > 0.1 * nominal, "jitter spreads the delays"


def test_a_seeded_backoff_repeats_its_delays_and_no_jitter_gives_the_nominal_ones() -> None:
    first = Backoff(rng=random.Random(7))
    second = Backoff(rng=random.Random(7))
    assert [first.compute(n) for n in range(1, 8)] == [second.compute(n) for n in range(1, 8)]
    exact = Backoff(base=0.5, cap=3.0, jitter=0.0)
    assert [exact.compute(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize(("base", "cap", "jitter"), [(0, 1, 0.1), (2, 1, 0.1), (1, 2, 1.5)])
def test_nonsense_parameters_are_refused(base: float, cap: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(base=base, cap=cap, jitter=jitter)


async def test_redis_py_retry_waits_what_the_policy_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same object drives redis-py's own Retry of a command."""
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr(redis_retry, "sleep", sleep)
    retry = redis_retry.Retry(Backoff(rng=random.Random(3)), retries=6)
    calls = 0

    async def connect() -> str:
        nonlocal calls
        calls += 1
        if calls <= 6:
            raise RedisConnectionError("refused")
        return "ok"

    async def failed(_error: Exception) -> None:
        return None

    assert await retry.call_with_retry(connect, failed) == "ok"
    expected = Backoff(rng=random.Random(3))
    assert slept == [expected.compute(n) for n in range(1, 7)]
    assert [round(d / n) for d, n in zip(slept, [1, 2, 4, 8, 16, 30], strict=True)] == [1] * 6


def test_settings_configure_the_policy_and_refuse_a_cap_below_the_base() -> None:
    settings = load_settings(environ={"CDB_BACKOFF_BASE_S": "0.1", "CDB_BACKOFF_CAP_S": "0.4",
                                      "CDB_BACKOFF_JITTER": "0", "CDB_SECRETS_DIR": "/nonexistent"})
    backoff = backoff_of(settings)
    assert [backoff.compute(n) for n in range(1, 5)] == [0.1, 0.2, 0.4, 0.4]
    bad = load_settings(environ={"CDB_BACKOFF_BASE_S": "5", "CDB_BACKOFF_CAP_S": "1",
                                 "CDB_SECRETS_DIR": "/nonexistent"})
    with pytest.raises(ConfigError, match="CDB_BACKOFF_CAP_S"):
        backoff_of(bad)
