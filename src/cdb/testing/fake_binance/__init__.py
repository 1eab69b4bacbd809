"""A fake Binance spot exchange on 127.0.0.1: the real wire formats, a ledger, faults on demand.

One port serves both faces, as ``--exchange-url`` expects:

- websocket trade streams: ``/ws/<symbol>@trade`` (raw), ``/stream?streams=a@trade/b@trade``
  (combined, ``{"stream": ..., "data": ...}``), the ``SUBSCRIBE``/``UNSUBSCRIBE``/
  ``LIST_SUBSCRIPTIONS`` methods, server pings, and the 24 h disconnect
  (``ws_max_lifetime_s``, short in tests);
- REST: ``/api/v3/ping``, ``time``, ``exchangeInfo``, ``order`` (POST/GET/DELETE,
  ``newClientOrderId``/``origClientOrderId``, MARKET and LIMIT, ACK/RESULT/FULL),
  ``openOrders``, ``account``, ``myTrades``; signed requests checked like the real API,
  request weight and order counts limited and reported in headers.

Faults (``Fault``) are injected from Python (``FakeBinance.inject``) or over HTTP
(``POST /_fake/faults``), so a scenario runner can drive a fake in another process. The
ledger (``orders``, ``fills``; ``GET /_fake/ledger``) is the venue's truth that tests
compare cdb's records against.

::

    async with FakeBinance(symbols=["BTCUSDT"]) as fake:
        fake.inject(Fault(kind="rate_limit", endpoint="POST /api/v3/order", times=2))
        await fake.publish([fake.trade("BTCUSDT", "42000.5")])  # streams, prices, fills
        ...  # clients use fake.url (REST) and fake.ws_url (streams)

Layout: ``faults`` (what can go wrong), ``records`` (symbols, orders, fills and their
JSON shapes), ``exchange`` (the matching engine and ledger, pure), ``rest`` (limits, bans,
signatures and REST faults before the engine), ``streams`` (websocket trade streams),
``control`` (the ``/_fake`` API), ``server`` (``FakeBinance``: one port, the lifecycle).
"""

from cdb.testing.fake_binance.exchange import Exchange
from cdb.testing.fake_binance.faults import Apply, Fault, FaultBook, FaultKind, FaultState
from cdb.testing.fake_binance.records import ApiError, FakeFill, FakeOrder, SymbolInfo
from cdb.testing.fake_binance.server import FakeBinance, FakeStats, main

__all__ = [
    "ApiError",
    "Apply",
    "Exchange",
    "FakeBinance",
    "FakeFill",
    "FakeOrder",
    "FakeStats",
    "Fault",
    "FaultBook",
    "FaultKind",
    "FaultState",
    "SymbolInfo",
    "main",
]
