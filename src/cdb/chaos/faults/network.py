"""Network faults between services and Redis or PostgreSQL, through the fault proxy.

The services of a run that uses them reach Redis and PostgreSQL through
``cdb.chaos.proxy`` (one proxy per link); these faults drive it over its
Toxiproxy-compatible HTTP API, so pointing the run at a real Toxiproxy works the
same. ``network`` adds a toxic (latency with jitter, bandwidth, slow_close, timeout,
reset_peer, limit_data) and removes it on undo; ``network_down`` disables the proxy
(connections cut, port closed) and enables it again.
"""

from __future__ import annotations

from typing import Any, Final

import httpx

from cdb.bus.keys import SERVICES
from cdb.chaos.faults.base import ScenarioFault
from cdb.chaos.history.recording import Effect
from cdb.chaos.scenario.registry import FAULTS, P
from cdb.chaos.targets.base import Plan

TOXICS: Final = ["latency", "bandwidth", "slow_close", "timeout", "reset_peer", "limit_data"]
_LINK = {
    "target": P.string("the dependency: redis or postgres", enum=["redis", "postgres"]),
    "service": P.string("the service whose link it is (default: every service)",
                        enum=["*", *SERVICES]),
}


class _Link(ScenarioFault):
    def plan(self, plan: Plan) -> None:
        plan.proxies.add((self.p.text("service", "*"), self.p.text("target")))

    def proxies(self) -> list[str]:
        service = self.p.text("service", "*")
        return list(self.ctx.target.proxy_name(service, self.p.text("target")).split(","))

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        async with httpx.AsyncClient(base_url=self.ctx.target.proxy_url(), timeout=5) as client:
            response = await client.request(method, path, json=body)
            response.raise_for_status()
            return response.json() if response.content else None


@FAULTS.register("network", summary="a Toxiproxy toxic on the link between services and "
                 "Redis or PostgreSQL; removed on undo",
                 params={**_LINK,
                         "toxic": P.string("the Toxiproxy toxic", enum=TOXICS),
                         "attributes": {"type": "object", "description": "the toxic's "
                                        "attributes: latency/jitter (ms), rate (KB/s), delay "
                                        "(ms), timeout (ms), bytes",
                                        "additionalProperties": {"type": "number"}},
                         "stream": P.string("upstream (to the server) or downstream",
                                            enum=["upstream", "downstream"]),
                         "toxicity": P.number("share of connections affected", minimum=0,
                                              maximum=1)},
                 required=("target", "toxic"), modes=("distributed",))
class NetworkToxic(_Link):
    async def apply(self) -> Any:
        body = {
            "name": f"cdb-{self.ctx.key}", "type": self.p.text("toxic"),
            "stream": self.p.text("stream", "downstream"),
            "toxicity": self.p.number("toxicity", 1.0),
            "attributes": dict(self.p.get("attributes") or {}),
        }
        for proxy in self.proxies():
            await self._call("POST", f"/proxies/{proxy}/toxics", body)
        self.evidence.append(f"{body['type']} on {', '.join(self.proxies())}")
        return self.evidence[-1]

    async def effect(self) -> Effect:
        touched = 0
        known = False
        for proxy in self.proxies():
            toxic = await self._call("GET", f"/proxies/{proxy}/toxics/cdb-{self.ctx.key}")
            stats = (toxic or {}).get("stats")
            if isinstance(stats, dict):
                known = True
                touched += int(stats.get("chunks", 0)) + int(stats.get("connections", 0))
        if not known:
            return Effect(took_effect=None, evidence="the proxy reports no toxic statistics")
        if touched:
            return Effect(took_effect=True, evidence=f"the toxic acted on {touched} chunks or "
                                                     "connections")
        return Effect(took_effect=False, evidence="no traffic crossed the toxic")

    async def undo(self) -> Any:
        for proxy in self.proxies():
            await self._call("DELETE", f"/proxies/{proxy}/toxics/cdb-{self.ctx.key}")
        return "toxic removed"


@FAULTS.register("network_down", summary="cut the link between services and Redis or "
                 "PostgreSQL (proxy disabled); restored on undo",
                 params=_LINK, required=("target",), modes=("distributed",))
class NetworkDown(_Link):
    async def apply(self) -> Any:
        for proxy in self.proxies():
            await self._call("POST", f"/proxies/{proxy}", {"enabled": False})
        self.evidence.append(f"disabled {', '.join(self.proxies())}")
        return self.evidence[-1]

    async def effect(self) -> Effect:
        from cdb.chaos.faults.infra import port_state

        states = []
        for proxy in self.proxies():
            info = await self._call("GET", f"/proxies/{proxy}")
            host, _, port = str(info["listen"]).rpartition(":")
            states.append(await port_state(host or "127.0.0.1", int(port), 0.5))
        ok = all(s != "open" for s in states)
        return Effect(took_effect=ok, evidence=f"proxy ports: {', '.join(states)}")

    async def undo(self) -> Any:
        for proxy in self.proxies():
            await self._call("POST", f"/proxies/{proxy}", {"enabled": True})
        return "link restored"
