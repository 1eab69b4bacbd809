"""A fault-injecting TCP proxy with Toxiproxy's toxics and a compatible HTTP API.

Hand-written on purpose: no maintained Python library provides a Toxiproxy-compatible
proxy (the Python Toxiproxy packages are clients of the Go server, and the few
pure-Python proxies are unmaintained and lack toxics), and the coordinator must not
depend on a Go binary being installed. Because the API is compatible, a run can be
pointed at a real Toxiproxy instead and the faults work unchanged.

Toxics (names and attributes as Toxiproxy's):

- ``latency``: ``latency`` and ``jitter`` (ms) added to each chunk, measured from its
  arrival so a burst is delayed, not serialised;
- ``bandwidth``: ``rate`` in KB/s;
- ``slow_close``: ``delay`` (ms) before a closing connection is closed;
- ``timeout``: nothing gets through; the connection is closed after ``timeout`` ms, or
  held until the toxic is removed when it is 0 (then the held data flows);
- ``reset_peer``: the connection is reset (TCP RST) after ``timeout`` ms;
- ``limit_data``: the connection is closed once ``bytes`` have passed.

Each toxic acts on one direction (``stream``: ``upstream`` towards the server,
``downstream`` towards the client, the default) and on a share of the connections
(``toxicity``, decided once per connection with a seeded random generator). A proxy
that is disabled (``enabled: false``, the "down" fault) closes every connection and
stops listening until it is enabled again. Toxics and proxies also report ``stats``
(chunks and connections they acted on), a cdb extension the coordinator uses to check
that a fault took effect.

API (Toxiproxy's paths): ``GET /version``, ``GET|POST /proxies``, ``POST /populate``,
``GET|POST|PATCH|DELETE /proxies/{proxy}``, ``GET|POST /proxies/{proxy}/toxics``,
``GET|POST|PATCH|DELETE /proxies/{proxy}/toxics/{toxic}``, ``POST /reset``.
Standalone: ``python -m cdb.chaos.proxy --api 127.0.0.1:8474``.

Whoever reaches the API can make the host connect anywhere, so it is guarded: proxies
listen on loopback unless the server is made ``public``; ``upstreams`` (when given)
lists the hosts proxies may forward to; a configured ``token`` is required as
``Authorization: Bearer <token>`` on every request (compared in constant time); bodies
are at most ``server.MAX_BODY`` bytes and every number in them must be finite. Each
direction of a connection holds at most ``link.QUEUE_CHUNKS`` chunks: a side that
does not read makes the proxy stop reading the other (backpressure), instead of buffering
without bound.

Modules: ``toxics`` (the toxics and request checks), ``link`` (one proxied connection),
``listener`` (one proxy: a port and its toxics), ``server`` (the proxies by
name and the HTTP API), ``standalone`` (``python -m cdb.chaos.proxy``).
"""
