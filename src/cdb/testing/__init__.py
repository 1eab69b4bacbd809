"""What users need to test their own strategies and services (in-memory bus, fakes,
throwaway servers).

``from cdb.testing import FakeBinance, RedisServer, PostgresServer, LocalPipeline``;
the names load their module on first use, so importing the package stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cdb.testing.cluster import LocalPipeline
    from cdb.testing.fake_binance import FakeBinance, Fault
    from cdb.testing.postgres import PostgresServer
    from cdb.testing.redis import RedisServer

_HOMES = {
    "FakeBinance": "cdb.testing.fake_binance",
    "Fault": "cdb.testing.fake_binance",
    "LocalPipeline": "cdb.testing.cluster",
    "PostgresServer": "cdb.testing.postgres",
    "RedisServer": "cdb.testing.redis",
}

__all__ = ["FakeBinance", "Fault", "LocalPipeline", "PostgresServer", "RedisServer"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'cdb.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
