"""The run report as one self-contained HTML file: uPlot (vendored) and the data are
inlined, so it opens offline, from a mail or an archive, with no CDN.

Text from runs (symbols, reasons, paths) is escaped; the data goes in a JSON script
element that the page's small script hands to uPlot.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files

import msgspec

from cdb.report.build import RunView, SymbolResult

_VENDOR = files("cdb.web") / "vendor" / "uplot"


@cache
def _asset(name: str) -> str:
    return (_VENDOR / name).read_text(encoding="utf-8")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _iso(ts_ns: int) -> str:
    if not ts_ns:
        return ""
    return datetime.fromtimestamp(ts_ns / 1e9, tz=UTC).isoformat(timespec="seconds")


def _table(rows: list[tuple[str, object]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table class='kv'>{body}</table>"


def _summary(view: RunView) -> str:
    s = view.summary
    ess = s.get("ess") or {}
    positions = s.get("open_positions") or {}
    assert isinstance(ess, dict)
    assert isinstance(positions, dict)
    rows: list[tuple[str, object]] = [
        ("run", f"{view.run_id} ({view.kind}, {view.legs} leg{'s' if view.legs > 1 else ''})"),
        ("started", _iso(view.started_ns)),
        ("finished", _iso(view.finished_ns) or "not finished"),
        ("market time", f"{_iso(int(str(s.get('first_ts', 0))))} to "
                        f"{_iso(int(str(s.get('last_ts', 0))))}"),
        ("trades", f"{int(str(s.get('trades', 0))):,}"),
        ("signals", s.get("signals", "")),
        ("orders", view.orders),
        ("fills", view.fills),
        ("PnL", f"{s.get('pnl', '')} (fees {s.get('fees', '')})"),
        ("equity", f"{s.get('equity', '')} (from {s.get('initial_equity', '')})"),
        ("max drawdown", f"{s.get('max_drawdown_pct', '')} %"),
        ("ESS at end", f"{ess.get('state', '')} {ess.get('reason', '')}".strip()),
        ("ESS trips", len(view.trips)),
        ("signals blocked by the ESS", s.get("ess_blocked", 0)),
        ("malformed rows skipped", s.get("malformed_rows", 0)),
        ("open positions", ", ".join(f"{k} {v}" for k, v in positions.items()) or "none"),
    ]
    return _table(rows)


def _symbols(results: list[SymbolResult]) -> str:
    head = ("symbol", "fills", "buys/sells", "realized", "unrealized", "fees", "PnL",
            "win rate", "max exposure", "position")
    rows = []
    for r in results:
        win = "" if r.win_rate is None else f"{r.win_rate * 100:.1f} %"
        cells = (r.symbol, r.fills, f"{r.buys}/{r.sells}", f"{r.realized_pnl:,.2f}",
                 f"{r.unrealized_pnl:,.2f}", f"{r.fees:,.2f}", f"{r.pnl:,.2f}", win,
                 f"{r.max_exposure:,.2f}", f"{r.position:g}")
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    if not rows:
        rows.append(f"<tr><td colspan='{len(head)}'>no fills</td></tr>")
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f"<table class='grid'><tr>{header}</tr>{''.join(rows)}</table>"


def _rejections(view: RunView) -> str:
    if not view.rejections:
        return "<p>none</p>"
    return _table([(k, f"{v:,}") for k, v in view.rejections.items()])


def _trips(view: RunView) -> str:
    if not view.trips:
        return "<p>none</p>"
    rows = "".join(
        f"<tr><td>{_e(_iso(int(str(t['ts']))))}</td><td>{_e(t['reason'])}</td>"
        f"<td>{_e(t['detail'])}</td><td>{_e(t['actor'])}</td></tr>" for t in view.trips)
    return ("<table class='grid'><tr><th>when (UTC)</th><th>reason</th><th>detail</th>"
            f"<th>by</th></tr>{rows}</table>")


def _settings(view: RunView) -> str:
    inputs = "".join(f"<li><code>{_e(msgspec.json.encode(i).decode())}</code></li>"
                     for i in view.inputs)
    settings = msgspec.json.format(msgspec.json.encode(view.settings), indent=2).decode()
    return (f"<h3>Input</h3><ul>{inputs}</ul><h3>Settings</h3>"
            f"<pre>{_e(settings)}</pre>")


def _section(i: int, view: RunView) -> str:
    charts = "".join(
        f"<h3>{_e(c.symbol)}</h3><div class='chart' id='price-{i}-{k}'></div>"
        for k, c in enumerate(view.charts))
    return f"""
<section class="run" data-run="{_e(view.run_id)}">
  <h2>Run {_e(view.run_id)}</h2>
  {_summary(view)}
  <h3>Equity</h3><div class="chart" id="equity-{i}"></div>
  <h3>Drawdown (%)</h3><div class="chart" id="drawdown-{i}"></div>
  <h3>Price, orders, fills and ESS trips</h3>{charts}
  <h3>Per symbol</h3>{_symbols(view.symbols)}
  <h3>Rejections by reason</h3>{_rejections(view)}
  <h3>ESS trips</h3>{_trips(view)}
  {_settings(view)}
</section>"""


_SCRIPT = r"""
(function () {
  const runs = JSON.parse(document.getElementById('cdb-data').textContent);
  const report = { charts: [], fillPoints: 0, orderPoints: 0, tripPoints: 0 };
  window.cdbReport = report;
  const width = (el) => Math.max(300, el.clientWidth || 600);
  const time = { time: true };
  function points(label, stroke, fill, size) {
    return { label, stroke, fill, paths: () => null, points: { show: true, size, stroke, fill } };
  }
  function chart(id, opts, data) {
    const el = document.getElementById(id);
    if (!el) return null;
    // A wide y axis: prices and equity in the hundred thousands keep every digit.
    const base = { width: width(el), height: 260, scales: { x: time }, axes: [{}, { size: 80 }] };
    const plot = new uPlot(Object.assign(base, opts), data, el);
    report.charts.push({ id, plot });
    return plot;
  }
  function count(arr) { return arr.filter((v) => v != null).length; }
  runs.forEach((run, i) => {
    const [ex, ey, dd] = run.equity;
    const eq = { label: 'equity', stroke: '#1565c0', width: 1.5 };
    const ddl = { label: 'drawdown %', stroke: '#c62828', fill: 'rgba(198,40,40,0.15)' };
    chart('equity-' + i, { series: [{}, eq] }, [ex, ey]);
    chart('drawdown-' + i, { series: [{}, ddl] }, [ex, dd]);
    run.charts.forEach((c, k) => {
      const data = uPlot.join([c.price, c.buys, c.sells, c.orders, c.trips]);
      const plot = chart('price-' + i + '-' + k, {
        series: [
          {},
          { label: c.symbol, stroke: '#455a64', width: 1, spanGaps: true },
          points('buy fills', '#2e7d32', '#66bb6a', 8),
          points('sell fills', '#b71c1c', '#ef5350', 8),
          points('orders', '#6a1b9a', 'rgba(0,0,0,0)', 11),
          points('ESS trips', '#000000', '#ff6f00', 16),
        ],
      }, data);
      if (plot) {
        report.fillPoints += count(data[2]) + count(data[3]);
        report.orderPoints += count(data[4]);
        report.tripPoints += count(data[5]);
      }
    });
  });
  if (runs.length === 2) {
    // The two runs on one time axis: seconds since each run's first point.
    const rel = (x) => x.map((v) => v - (x[0] || 0));
    const a = runs[0].equity, b = runs[1].equity;
    const data = uPlot.join([[rel(a[0]), a[1]], [rel(b[0]), b[1]]]);
    chart('compare-equity', {
      scales: { x: { time: false } },
      series: [{ label: 'seconds from start' },
        { label: runs[0].run_id, stroke: '#1565c0', spanGaps: true },
        { label: runs[1].run_id, stroke: '#ef6c00', spanGaps: true }],
    }, data);
  }
  report.ready = true;
})();
"""

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
.runs { display: grid; gap: 2em; grid-template-columns: repeat(var(--cols), minmax(0, 1fr)); }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: left; }
.grid td { text-align: right; } .grid td:first-child { text-align: left; }
.chart { margin: 0.5em 0 1em; min-height: 280px; }
pre { background: #f6f6f6; padding: 0.5em; overflow: auto; max-height: 24em; }
code { font-size: 12px; word-break: break-all; }
"""


def render(views: list[RunView]) -> str:
    """The report of ``views`` (one run, or two side by side) as HTML text."""
    # <, > and & occur only inside JSON strings: as escapes, no text of a run can end
    # the script element or be read as markup.
    data = (msgspec.json.encode(views).decode()
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))
    title = " vs ".join(v.run_id for v in views)
    compare = ("<h2>Equity of both runs</h2><div class='chart' id='compare-equity'></div>"
               if len(views) == 2 else "")
    sections = "".join(_section(i, v) for i, v in enumerate(views))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cdb run {_e(title)}</title>
<style>{_asset("uPlot.min.css")}</style><style>{_STYLE}</style>
</head><body>
<h1>cdb run report: {_e(title)}</h1>
{compare}
<div class="runs" style="--cols: {len(views)}">{sections}</div>
<footer><p>Charts: uPlot (MIT license), inlined.</p></footer>
<script id="cdb-data" type="application/json">{data}</script>
<script>{_asset("uPlot.iife.min.js")}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
