"""The distributed market's settings: the shapes a scenario plans reach ws intact."""

from __future__ import annotations

import msgspec
import pytest

from cdb.config import load_settings
from cdb.errors import ConfigError
from cdb.marketdata.shapes import flash_crash, gap


def test_planned_shapes_survive_the_trip_through_ws_shapes() -> None:
    """The coordinator encodes its plan's shapes as WS_SHAPES; ws decodes the same."""
    shapes = [flash_crash("BTCUSDT", 8.0, 15.0, 10.0), gap("*", 30.0, 2.0, -3.5)]
    env = {"WS_SHAPES": msgspec.json.encode(shapes).decode(), "WS_START_NS": "17",
           "WS_TRADES_PER_S": "20", "WS_BURSTS_PER_HOUR": "0"}
    settings = load_settings(environ=env)
    assert list(settings.market_shapes()) == shapes
    assert (settings.ws_start_ns, settings.ws_trades_per_s, settings.ws_bursts_per_hour) == (
        17, 20.0, 0.0)


def test_no_shapes_by_default() -> None:
    assert load_settings(environ={}).market_shapes() == ()


def test_a_bad_shape_stops_the_service_naming_ws_shapes() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(environ={"WS_SHAPES": '[{"kind": "crash", "symbol": "BTCUSDT"}]'})
    assert "WS_SHAPES" in str(err.value)
    assert "kind" in str(err.value)
