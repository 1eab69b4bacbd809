"""The soak's result and its page: verdict, faults by kind, recoveries, resources."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import msgspec

from cdb.chaos.checks.leaks import Series, amount
from cdb.chaos.checks.verdict import Assertion
from cdb.chaos.reports.html import COLORS, CSS, STATUS, escape
from cdb.chaos.soak.shrink import Trial


class Recovery(msgspec.Struct, kw_only=True):
    kind: str
    faults: int
    measured: int
    p50_s: float | None = None
    p99_s: float | None = None
    max_s: float | None = None


class SeriesSummary(msgspec.Struct, kw_only=True):
    subject: str
    metric: str
    samples: int
    slope_per_s: float | None
    growth: float | None
    threshold: float | None
    flagged: bool
    decides: bool


class Shrunk(msgspec.Struct, kw_only=True):
    check: str
    faults: list[str]
    file: str
    trials: list[Trial]
    reproduced: bool
    """The written file, run on its own, failed on the same check."""


class SoakResult(msgspec.Struct, kw_only=True):
    status: str
    exit_code: int
    reasons: list[str]
    seed: int
    mode: str
    duration_s: float
    """Scenario time with faults (market time)."""
    wall_s: float
    faults: int
    faults_by_kind: dict[str, int]
    schedule: list[dict[str, Any]]
    recovery: list[Recovery]
    assertions: list[Assertion]
    series: list[SeriesSummary]
    scenario_file: str
    report_dir: str
    reports: dict[str, str] = msgspec.field(default_factory=dict)
    shrunk: Shrunk | None = None


_PW: Final = 340
_PH: Final = 110


def chart(series: list[Series]) -> str:
    """SVG panels, one per metric, one line per subject (flagged ones named in red)."""
    panels = []
    by_metric: dict[str, list[Series]] = {}
    for s in series:
        by_metric.setdefault(s.metric, []).append(s)
    for metric, group in sorted(by_metric.items()):
        pts = [p for s in group for p in s.points]
        if not pts:
            continue
        t0, t1 = min(t for t, _ in pts), max(t for t, _ in pts)
        v0, v1 = min(v for _, v in pts), max(v for _, v in pts)
        t1, v1 = max(t1, t0 + 1e-6), max(v1, v0 + 1e-6)

        def xy(t: float, v: float, t0: float = t0, t1: float = t1, v0: float = v0,
               v1: float = v1) -> str:
            return (f"{40 + (t - t0) * (_PW - 50) / (t1 - t0):.1f},"
                    f"{_PH - 20 - (v - v0) * (_PH - 35) / (v1 - v0):.1f}")

        lines, legend = [], []
        for i, s in enumerate(group):
            color = COLORS[i % len(COLORS)]
            lines.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.3" '
                         f'points="{" ".join(xy(t, v) for t, v in s.points)}"/>')
            mark = ' style="fill:#c62828;font-weight:600"' if s.flagged else ""
            legend.append(f'<tspan fill="{color}">■</tspan><tspan{mark}> {escape(s.subject)}'
                          f"{' (leak)' if s.flagged else ''} </tspan>")
        panels.append(
            f'<svg width="{_PW}" height="{_PH + 16}" role="img">'
            f'<text x="4" y="12" font-weight="600">{escape(metric)}</text>'
            f'<text x="4" y="{_PH - 4}" fill="#777">{escape(amount(metric, v0))} to '
            f'{escape(amount(metric, v1))}, t {t0:g} to {t1:g}s</text>'
            f'<line x1="40" y1="{_PH - 20}" x2="{_PW - 10}" y2="{_PH - 20}" stroke="#ccc"/>'
            f'{"".join(lines)}<text x="4" y="{_PH + 12}">{"".join(legend)}</text></svg>')
    return '<div style="display:flex;flex-wrap:wrap;gap:8px">' + "".join(panels) + "</div>"


def _fmt(value: float | None, unit: str = "s") -> str:
    return "-" if value is None else f"{value:.3g}{unit}"


def render_html(result: SoakResult, series: list[Series], run_report: str | None,
                out: Path) -> str:
    """The soak's page: verdict, faults by kind, recoveries, resource series, shrinking."""
    color = STATUS.get(result.status, "#777")
    rows = "".join(
        f"<tr><td>{escape(r.kind)}</td><td>{r.faults}</td><td>{r.measured}</td>"
        f"<td>{_fmt(r.p50_s)}</td><td>{_fmt(r.p99_s)}</td><td>{_fmt(r.max_s)}</td></tr>"
        for r in result.recovery)
    checks = "".join(
        f'<tr><td><span class="badge" style="background:{STATUS.get(a.status, "#777")}">'
        f"{escape(a.status)}</span></td><td>{escape(a.category)}</td><td>{escape(a.name)}</td>"
        f"<td>{escape(a.detail)}</td></tr>" for a in result.assertions
        if a.category in ("invariant", "measurement", "steady-state", "run")
        or a.status != "pass")
    slopes = "".join(
        f"<tr><td>{escape(s.subject)}</td><td>{escape(s.metric)}</td><td>{s.samples}</td>"
        f"<td>{_fmt(s.slope_per_s, '/s')}</td><td>{_fmt(s.growth, '')}</td>"
        f"<td>{_fmt(s.threshold, '')}</td><td>{'LEAK' if s.flagged else ''}"
        f"{'' if s.decides else ' (note)'}</td></tr>" for s in result.series)
    shrunk = ""
    if result.shrunk is not None:
        sh = result.shrunk
        shrunk = (f"<h2>Shrunk</h2><p>{escape(sh.check)} still fails with {len(sh.faults)} "
                  f"fault(s): {escape(', '.join(sh.faults) or 'none')} after {len(sh.trials)} "
                  f"trial(s); <span class=mono>{escape(Path(sh.file).name)}</span> "
                  f"{'reproduces it on its own' if sh.reproduced else 'did NOT reproduce it'}"
                  "</p>")
    link = ""
    if run_report:
        rel = Path(run_report).resolve().relative_to(out.resolve()) if Path(
            run_report).resolve().is_relative_to(out.resolve()) else Path(run_report)
        link = f' <a href="{escape(rel)}">the run\'s timeline report</a>'
    reasons = "".join(f"<li>{escape(r)}</li>" for r in result.reasons)
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>soak {escape(result.status)}'
        f"</title><style>{CSS}</style></head><body>"
        f'<h1>Soak, seed {result.seed} <span class="badge" style="background:{color}">'
        f"{escape(result.status)}</span></h1><p class=meta>{result.mode} mode, "
        f"{result.duration_s:g}s of faults, {result.faults} fault(s) "
        f"({escape(', '.join(f'{k} {v}' for k, v in result.faults_by_kind.items()))}), "
        f"{result.wall_s:.1f}s wall.{link}</p><ul class=reasons>{reasons}</ul>"
        "<h2>Recovery per fault kind</h2><table><tr><th>kind</th><th>faults</th>"
        f"<th>measured</th><th>p50</th><th>p99</th><th>max</th></tr>{rows}</table>"
        f"<h2>Checks over the whole history</h2><table>{checks}</table>"
        "<h2>Resources (leak check: linear fit over the second half)</h2>"
        f"{chart(series)}<table><tr><th>subject</th><th>metric</th><th>samples</th>"
        f"<th>slope</th><th>growth</th><th>limit</th><th></th></tr>{slopes}</table>"
        f"{shrunk}</body></html>")


def write_reports(result: SoakResult, series: list[Series], out: Path,
                  run_report: str | None) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "soak.json", "html": out / "soak.html",
             "scenario": out / "soak.yaml"}
    result.reports = {k: str(v) for k, v in paths.items()}
    if run_report:
        result.reports["run"] = run_report
    paths["json"].write_bytes(msgspec.json.encode(result))
    paths["html"].write_text(render_html(result, series, run_report, out))
    return result.reports
