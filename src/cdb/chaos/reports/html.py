"""The HTML report: one self-contained page (inline CSS and SVG, no scripts) drawn
from the journal, so a saved journal can be rendered again.

The chart puts the whole run on one time axis: prices (as % from their first
trade), the faults as bars from application to undo, the ESS state, orders, fills and
rejections, the health of the services and the consumer lag.
"""

from __future__ import annotations

import html
from typing import Any, Final

_W: Final = 1100
_LEFT: Final = 120
_RIGHT: Final = 20
COLORS: Final = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
STATUS: Final = {"pass": "#2e7d32", "fail": "#c62828", "unknown": "#ef6c00"}
_HEALTH: Final = {"healthy": "#66bb6a", "degraded": "#ffa726", "unhealthy": "#ef5350",
                  "unreachable": "#8e24aa"}

CSS: Final = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.badge{display:inline-block;padding:3px 12px;border-radius:12px;color:#fff;font-weight:600}
table{border-collapse:collapse;width:100%;font-size:13px}
td,th{border-bottom:1px solid #e0e0e0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#fafafa}.meta{color:#555}.mono{font-family:ui-monospace,monospace}
svg text{font:11px system-ui,sans-serif}.reasons li{margin:2px 0}
"""


def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


class _Axis:
    def __init__(self, t0: float, t1: float) -> None:
        self.t0, self.t1 = t0, max(t1, t0 + 1e-6)

    def x(self, t: float) -> float:
        return _LEFT + (t - self.t0) * (_W - _LEFT - _RIGHT) / (self.t1 - self.t0)


def _ticks(axis: _Axis, y: float, height: float) -> list[str]:
    span = axis.t1 - axis.t0
    step = next(s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 1e9)
                if span / s <= 12)
    out = []
    t = (axis.t0 // step) * step
    while t <= axis.t1:
        if t >= axis.t0:
            x = axis.x(t)
            out.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + height}" '
                       f'stroke="#eee"/><text x="{x:.1f}" y="{y + height + 12}" '
                       f'text-anchor="middle" fill="#777">{t:g}s</text>')
        t += step
    return out


def _price_panel(axis: _Axis, prices: dict[str, list[list[float]]], y: float,
                 h: float) -> list[str]:
    out = [f'<text x="8" y="{y + 12}" fill="#333">price</text>']
    series = []
    for sym, points in prices.items():
        if points:
            first = points[0][4]
            series.append((sym, [(p[0], (p[2] / first - 1) * 100, (p[4] / first - 1) * 100)
                                 for p in points], first))
    if not series:
        return out
    lo = min(min(v[1] for v in s[1]) for s in series)
    hi = max(max(v[2] for v in s[1]) for s in series)
    lo, hi = min(lo, -0.5), max(hi, 0.5)

    def py(v: float) -> float:
        return y + h - (v - lo) * h / (hi - lo)

    for v in (lo, 0.0, hi):
        out.append(f'<text x="{_LEFT - 6}" y="{py(v) + 4:.1f}" text-anchor="end" '
                   f'fill="#777">{v:+.1f}%</text>')
    out.append(f'<line x1="{_LEFT}" y1="{py(0):.1f}" x2="{_W - _RIGHT}" y2="{py(0):.1f}" '
               'stroke="#ccc" stroke-dasharray="3 3"/>')
    for i, (sym, pts, first) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        path = " ".join(f"{axis.x(t):.1f},{py(c):.1f}" for t, _, c in
                        ((p[0], p[1], p[2]) for p in pts))
        lows = " ".join(f"{axis.x(t):.1f},{py(low):.1f}" for t, low, _ in pts)
        out.append(f'<polyline points="{lows}" fill="none" stroke="{color}" '
                   'stroke-opacity=".25"/>')
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.4"/>')
        out.append(f'<text x="{_LEFT + 6 + 150 * i}" y="{y + 12}" fill="{color}">{escape(sym)} '
                   f'(from {first / 1e8:,.2f})</text>')
    return out


def _bar(axis: _Axis, t0: float, t1: float, y: float, h: float, color: str,
         label: str = "") -> str:
    x0, x1 = axis.x(t0), axis.x(t1)
    width = max(x1 - x0, 2.0)
    text = (f'<text x="{x0 + 3:.1f}" y="{y + h - 3}" fill="#fff">{escape(label)}</text>'
            if label and width > 40 else "")
    return (f'<rect x="{x0:.1f}" y="{y}" width="{width:.1f}" height="{h}" fill="{color}" '
            f'rx="2"><title>{escape(label)} {t0:.2f}s to {t1:.2f}s</title></rect>{text}')


def _fault_lane(axis: _Axis, cdb: dict[str, Any], last: float, y: float) -> tuple[list[str],
                                                                                  float]:
    parts = []
    applied: dict[str, float] = cdb.get("applied") or {}
    undone: dict[str, float] = cdb.get("undone") or {}
    types = {s["key"]: s["type"] for s in cdb["plan"]["steps"]}
    for i, key in enumerate(sorted(applied, key=lambda k: applied[k])):
        parts.append(f'<text x="8" y="{y + 12}" fill="#333">{escape(key)[:16]}</text>')
        parts.append(_bar(axis, applied[key], undone.get(key, last), y, 15,
                          COLORS[(i + 3) % len(COLORS)], types.get(key, key)))
        y += 19
    return parts, y


def _ess_lane(axis: _Axis, changes: list[dict[str, Any]], last: float, y: float) -> list[str]:
    parts = [f'<text x="8" y="{y + 12}" fill="#333">ESS</text>']
    halted_at: float | None = None
    for change in changes:
        if change["state"] == "HALTED" and halted_at is None:
            halted_at = change["t"]
        elif change["state"] == "ACTIVE" and halted_at is not None:
            parts.append(_bar(axis, halted_at, change["t"], y, 15, "#c62828", "HALTED"))
            halted_at = None
    if halted_at is not None:
        parts.append(_bar(axis, halted_at, last, y, 15, "#c62828", "HALTED"))
    if not changes:
        parts.append(f'<text x="{_LEFT + 4}" y="{y + 12}" fill="#999">no ESS change '
                     'recorded</text>')
    return parts


def _trading_lane(axis: _Axis, events: dict[str, Any], y: float) -> list[str]:
    parts = [f'<text x="8" y="{y + 14}" fill="#333">orders/fills</text>']
    for o in events.get("order", []):
        x = axis.x(o["t"])
        up = o["side"] == "BUY"
        color = "#2e7d32" if up else "#c62828"
        pts = (f"{x - 4:.1f},{y + 12} {x + 4:.1f},{y + 12} {x:.1f},{y + 4}" if up else
               f"{x - 4:.1f},{y + 4} {x + 4:.1f},{y + 4} {x:.1f},{y + 12}")
        parts.append(f'<polygon points="{pts}" fill="{color}"><title>order {escape(o["id"])} '
                     f'{o["side"]}</title></polygon>')
    for f in events.get("fill", []):
        parts.append(f'<circle cx="{axis.x(f["t"]):.1f}" cy="{y + 20}" r="2.2" fill="#1565c0">'
                     f'<title>fill {escape(f["id"])}</title></circle>')
    for r in events.get("risk_decision", []):
        x = axis.x(r["t"])
        parts.append(f'<path d="M{x - 3:.1f},{y + 25} l6,6 m0,-6 l-6,6" stroke="#ef6c00">'
                     f'<title>rejected: {escape(r.get("reason", ""))}</title></path>')
    for a in events.get("alert", []):
        parts.append(f'<text x="{axis.x(a["t"]):.1f}" y="{y + 40}" fill="#c62828" '
                     f'text-anchor="middle">!<title>{escape(a.get("code", ""))}: '
                     f'{escape(a.get("message", ""))}</title></text>')
    return parts


def _health_lane(axis: _Axis, health: list[dict[str, Any]], y: float) -> list[str]:
    parts = [f'<text x="8" y="{y + 11}" fill="#333">health</text>']
    for i, a in enumerate(health):
        t1 = health[i + 1]["t"] if i + 1 < len(health) else a["t"] + 1
        value = a.get("value") or {}
        status = "unreachable" if a.get("error") else value.get("status", "unreachable")
        parts.append(_bar(axis, a["t"], t1, y, 12, _HEALTH.get(status, "#999")))
    return parts


def _lag_lane(axis: _Axis, samples: list[dict[str, Any]], y: float) -> list[str]:
    lag = [(s["t"], (s.get("value") or {}).get("total", 0)) for s in samples
           if not s.get("error")]
    parts = [f'<text x="8" y="{y + 12}" fill="#333">lag</text>']
    if lag:
        top = max(max(v for _, v in lag), 1)
        pts = " ".join(f"{axis.x(t):.1f},{y + 60 - v * 60 / top:.1f}" for t, v in lag)
        parts.append(f'<polyline points="{pts}" fill="none" stroke="#6a1b9a" '
                     'stroke-width="1.3"/>')
        parts.append(f'<text x="{_LEFT - 6}" y="{y + 8}" text-anchor="end" fill="#777">{top}'
                     '</text>')
    return parts


def _chart(doc: dict[str, Any]) -> str:
    cdb = doc["cdb"]
    rec = cdb.get("recording") or {}
    plan = cdb["plan"]
    prices = rec.get("prices") or {}
    samples = rec.get("samples") or {}
    events = rec.get("events") or {}
    last = max([p[-1][0] for p in prices.values() if p]
               + [plan["timeline_end"] + plan["settle"]])
    axis = _Axis(-plan["warmup"], last)
    top = 10.0
    parts = _price_panel(axis, prices, top, 170)
    faults, y = _fault_lane(axis, cdb, last, top + 190)
    parts += faults
    parts += _ess_lane(axis, events.get("ess_change", []), last, y)
    y += 22
    parts += _trading_lane(axis, events, y)
    y += 46
    parts += _health_lane(axis, samples.get("__health__", []), y)
    y += 20
    parts += _lag_lane(axis, samples.get("__lag__", []), y)
    y += 66
    zero = axis.x(0.0)
    parts.insert(0, f'<line x1="{zero:.1f}" y1="{top}" x2="{zero:.1f}" y2="{y}" '
                    'stroke="#90a4ae" stroke-dasharray="4 3"/>')
    parts = _ticks(axis, top, y - top) + parts
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{y + 20:.0f}" '
            f'viewBox="0 0 {_W} {y + 20:.0f}">' + "".join(parts) + "</svg>")


def _assertion_row(a: dict[str, Any]) -> str:
    evidence = "".join(f"<br><span class=mono>{escape(e)}</span>" for e in a.get("evidence") or [])
    measured = "" if a.get("measured") is None else f"{a['measured']:g}s"
    color = STATUS[a["status"]]
    return (f"<tr><td>{escape(a['category'])}</td><td>{escape(a['name'])}</td>"
            f'<td><span class="badge" style="background:{color}">{a["status"]}</span></td>'
            f"<td>{escape(a['detail'])}{evidence}</td><td>{measured}</td></tr>")


def render_html(doc: dict[str, Any]) -> str:
    """The report page of a journal document."""
    cdb = doc["cdb"]
    verdict = cdb["verdict"]
    rows = "".join(_assertion_row(a) for a in cdb["assertions"])
    acts = "".join(
        f'<tr><td>{a["t_start"]:.2f}</td><td>{escape(a["phase"])}</td><td>{escape(a["kind"])}</td>'
        f'<td>{escape(a["key"])}</td><td>{escape(a["type"])}</td><td>{escape(a["status"])}</td>'
        f'<td class="mono">{escape(a.get("error") or "")}'
        f'{escape((a.get("effect") or {}).get("evidence", ""))}</td></tr>'
        for a in cdb["activities"])
    reasons = "".join(f"<li>{escape(r)}</li>" for r in cdb["reasons"])
    chart = _chart(doc) if cdb.get("recording") else "<p>nothing was recorded</p>"
    exp = doc["experiment"]
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{escape(exp.get("title", "scenario"))}: {verdict}</title><style>{CSS}</style></head><body>
<h1>{escape(exp.get("title", ""))} <span class="badge" style="background:{STATUS[verdict]}">
{verdict.upper()}</span></h1>
<div class="meta">{escape(cdb["scenario_file"])} &middot; mode {escape(cdb["mode"])} &middot; seed
<b>{cdb["seed"]}</b> &middot; namespace {escape(cdb["namespace"])} &middot; {doc["duration"]:.1f}s
&middot; {escape(doc["start"])}</div>
<p>{escape(exp.get("description", ""))}</p>
{f'<ul class="reasons">{reasons}</ul>' if reasons else ""}
<h2>Timeline</h2>{chart}
<h2>Assertions</h2><table><tr><th>category</th><th>name</th><th>result</th><th>detail</th>
<th>measured</th></tr>{rows}</table>
<h2>Activities</h2><table><tr><th>t (s)</th><th>phase</th><th>kind</th><th>key</th>
<th>type</th><th>status</th><th>error / effect</th></tr>{acts}</table>
<p class="meta">cdb {escape(cdb["version"])} &middot; the full recording is in journal.json</p>
</body></html>
"""
