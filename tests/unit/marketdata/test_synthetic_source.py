"""The synthetic market is deterministic, realistic enough, lazy, and shows its shapes."""

from __future__ import annotations

import random
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from itertools import islice

import msgspec
import pytest

from cdb.errors import InputError
from cdb.events import SCALE, Trade, trade_event_id
from cdb.marketdata.shapes import Shape, flash_crash, flat, gap, spike, stale
from cdb.marketdata.synthetic import START_NS, SyntheticSource

NS = 1_000_000_000


def generate(**kwargs: object) -> list[Trade]:
    options: dict[str, object] = {"seed": 1, "duration_s": 300}
    options.update(kwargs)
    return [t for batch in SyntheticSource(**options).batches() for t in batch]  # type: ignore[arg-type]


def of(trades: list[Trade], symbol: str, start_s: float = 0, end_s: float = 1e12) -> list[Trade]:
    lo, hi = START_NS + int(start_s * NS), START_NS + int(end_s * NS)
    return [t for t in trades if t.symbol == symbol and lo <= t.ts < hi]


def last_price_before(trades: list[Trade], symbol: str, at_s: float) -> int:
    return of(trades, symbol, 0, at_s)[-1].price_e8


def test_same_seed_same_trades_other_seed_other_trades() -> None:
    encode = msgspec.msgpack.encode
    first = generate(seed=42)
    assert encode(first) == encode(generate(seed=42))
    assert encode(first) != encode(generate(seed=43))


def test_batch_size_does_not_change_the_trades() -> None:
    assert generate(batch_size=7) == generate(batch_size=1000)


def test_trades_are_time_ordered_well_formed_and_within_the_run() -> None:
    trades = generate(duration_s=120, source="ws-1")
    assert {t.symbol for t in trades} == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    assert [t.ts for t in trades] == sorted(t.ts for t in trades)
    assert trades[0].ts >= START_NS
    assert trades[-1].ts < START_NS + 120 * NS
    for t in trades[:500]:
        assert t.id == trade_event_id("synthetic", t.symbol, t.trade_id)
        assert t.correlation_id is t.id
        assert t.causation_id is t.id
        assert t.source == "ws-1"
        assert t.price_e8 > 0
        assert t.qty_e8 > 0
    ids = [t.id for t in trades]
    assert len(set(ids)) == len(ids)


def test_volume_is_realistic() -> None:
    """Default symbols trade some hundreds of thousands of USDT a minute each."""
    trades = generate(duration_s=300, bursts_per_hour=0)
    per_minute: dict[tuple[str, int], int] = defaultdict(int)
    for t in trades:
        per_minute[t.symbol, (t.ts - START_NS) // (60 * NS)] += t.price_e8 * t.qty_e8 // SCALE
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        minutes = [v / SCALE for (s, _), v in per_minute.items() if s == symbol]
        assert 100_000 < sorted(minutes)[len(minutes) // 2] < 2_000_000, symbol
    start = {t.symbol: t.price_e8 for t in reversed(trades)}
    assert 41_000 * SCALE < start["BTCUSDT"] < 43_000 * SCALE


def test_an_hour_has_momentum_moves_of_three_percent_within_a_minute() -> None:
    """What makes a momentum strategy (3 % in a 60 s lookback) fire on its own."""
    trades = generate(seed=11, duration_s=3600, trades_per_s=5)
    moves = 0
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        window: deque[Trade] = deque()
        quiet_until = 0
        for t in of(trades, symbol):
            window.append(t)
            while window[0].ts < t.ts - 60 * NS:
                window.popleft()
            ref = window[0].price_e8
            if abs(t.price_e8 - ref) * 100 >= 3 * ref and t.ts > quiet_until:
                moves += 1
                quiet_until = t.ts + 60 * NS
    assert moves >= 3


def test_no_momentum_moves_when_bursts_are_off() -> None:
    trades = generate(duration_s=1800, trades_per_s=5, bursts_per_hour=0)
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        prices = [t.price_e8 for t in of(trades, symbol)]
        assert max(prices) < min(prices) * 1.03


def test_flash_crash_reaches_its_drop_then_partly_recovers() -> None:
    trades = generate(shapes=[flash_crash("BTCUSDT", at=100, drop_pct=20, over_s=10)])
    start = last_price_before(trades, "BTCUSDT", 100)
    window = of(trades, "BTCUSDT", 100, 160)
    bottom = min(t.price_e8 for t in window)
    assert bottom <= start * 0.8
    assert bottom >= start * 0.79
    after = of(trades, "BTCUSDT", 160, 170)[-1].price_e8
    assert start * 0.85 < after < start * 0.95  # half the drop recovered
    assert of(trades, "ETHUSDT", 100, 160)  # other symbols untouched and trading


def test_spike_reaches_its_rise_then_falls_back() -> None:
    trades = generate(shapes=[spike("ETHUSDT", at=50, rise_pct=8, over_s=5)])
    start = last_price_before(trades, "ETHUSDT", 50)
    assert max(t.price_e8 for t in of(trades, "ETHUSDT", 50, 65)) >= start * 1.08
    assert abs(of(trades, "ETHUSDT", 70, 80)[-1].price_e8 / start - 1) < 0.01


def test_gap_has_no_trades_then_a_jump() -> None:
    trades = generate(shapes=[gap("SOLUSDT", at=60, duration_s=30, jump_pct=-5)])
    assert of(trades, "SOLUSDT", 60, 90) == []
    before = last_price_before(trades, "SOLUSDT", 60)
    after = of(trades, "SOLUSDT", 90)[0].price_e8
    assert after / before == pytest.approx(0.95, abs=0.002)
    assert of(trades, "BTCUSDT", 60, 90)


def test_flat_keeps_one_price_while_trading_continues() -> None:
    trades = generate(shapes=[flat("BTCUSDT", at=30, duration_s=60)])
    window = of(trades, "BTCUSDT", 30, 90)
    assert len(window) > 100
    assert {t.price_e8 for t in window} == {last_price_before(trades, "BTCUSDT", 30)}
    assert len({t.price_e8 for t in of(trades, "BTCUSDT", 90, 150)}) > 10


def test_stale_on_every_symbol_stops_the_feed_then_it_resumes() -> None:
    trades = generate(shapes=[stale("*", at=40, duration_s=20)])
    assert [t for t in trades if START_NS + 40 * NS <= t.ts < START_NS + 60 * NS] == []
    resumed = [t for t in trades if START_NS + 60 * NS <= t.ts < START_NS + 62 * NS]
    assert {t.symbol for t in resumed} == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}


def test_shapes_are_plain_data_as_a_scenario_file_gives_them() -> None:
    raw = (
        b'{"kind": "flash_crash", "symbol": "BTCUSDT", "at_s": 100, "duration_s": 10,'
        b' "magnitude_pct": 20}'
    )
    shape = msgspec.json.decode(raw, type=Shape)
    assert shape == flash_crash("BTCUSDT", at=100, drop_pct=20, over_s=10)
    assert msgspec.convert(msgspec.to_builtins(shape), Shape) == shape
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"kind": "meteor", "symbol": "X", "at_s": 1, "duration_s": 1}, Shape)


@pytest.mark.parametrize(
    "shape",
    [
        flash_crash("DOGEUSDT", at=1, drop_pct=10, over_s=1),
        flash_crash("BTCUSDT", at=1, drop_pct=100, over_s=1),
        spike("BTCUSDT", at=1, rise_pct=0, over_s=1),
        gap("BTCUSDT", at=1, duration_s=0, jump_pct=1),
        stale("BTCUSDT", at=-1, duration_s=5),
    ],
)
def test_impossible_shapes_raise_input_error(shape: Shape) -> None:
    with pytest.raises(InputError, match="invalid shape"):
        SyntheticSource(seed=1, duration_s=10, shapes=[shape])


def test_generation_is_lazy() -> None:
    """A year-long source hands out its first batches at once."""
    batches = SyntheticSource(seed=1, duration_s=365 * 86_400).batches()
    assert isinstance(batches, Iterator)
    assert [len(b) for b in islice(batches, 3)] == [1000, 1000, 1000]


def test_no_global_randomness_and_no_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object) -> None:
        raise AssertionError("global random or system clock used")

    for name in ("random", "getrandbits", "uniform", "choice", "randrange", "seed"):
        monkeypatch.setattr(random, name, forbidden)
    monkeypatch.setattr(time, "time", forbidden)
    monkeypatch.setattr(time, "time_ns", forbidden)
    assert generate(duration_s=30, shapes=[flash_crash("BTCUSDT", 5, 10, 2)])


def test_a_shape_leaves_the_trades_well_before_it_unchanged() -> None:
    """So a scenario can add a shape without changing the market leading up to it."""
    plain = generate(duration_s=400, bursts_per_hour=30)
    shaped = generate(duration_s=400, bursts_per_hour=30, shapes=[gap("*", 300, 10, 5)])
    cut = START_NS + 150 * NS
    assert [t for t in shaped if t.ts < cut] == [t for t in plain if t.ts < cut]
    assert shaped != plain
