"""``cdb scenario soak``: a seeded nemesis, the whole history checked, leaks, shrinking.

The nemesis (``chaos.nemesis``) draws the schedule and writes it as a scenario
(``soak.yaml``); the runner runs it like any scenario (every invariant over the whole
recorded run, a recovery measurement per fault that takes a service down, the same
verdict rules), with the ``resources`` probe sampled throughout for the leak check
(``chaos.leaks``). A failing soak is shrunk (``chaos.shrink``): the same seed rerun
with subsets of the schedule until the smallest one that still fails on the same check
is found, written as ``shrunk.yaml``.

Reports in the output directory: ``soak.yaml`` (the schedule as a scenario),
``run/`` (its journal, JUnit and HTML report), ``soak.json`` and ``soak.html`` (faults
by kind, recovery p50/p99 per kind, the resource series with their slopes, the
verdict), and ``shrunk.yaml`` with ``shrink/`` (its trials) after a failure.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import msgspec
import yaml

from cdb.chaos import leaks
from cdb.chaos.checks.verdict import Assertion, decide
from cdb.chaos.nemesis import Planned, SoakSpec, document, kinds_of, schedule
from cdb.chaos.reports.html import _CSS, _STATUS, _e
from cdb.chaos.shrink import Trial, ddmin
from cdb.errors import InputError


class Infra(msgspec.Struct, frozen=True, kw_only=True):
    """Servers the runs may share (distributed mode), as ``cdb scenario run`` takes them."""

    redis_url: str | None = None
    postgres_url: str | None = None
    toxiproxy_url: str | None = None


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


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _text(doc: dict[str, Any], header: str) -> str:
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + yaml.safe_dump(doc, sort_keys=False, width=100)


def _write(file: Path, text: str) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)


async def run_document(doc: dict[str, Any], file: Path, report_dir: Path, infra: Infra,
                       header: str = "") -> tuple[list[Assertion], list[leaks.Series], Any]:
    """Write ``doc`` to ``file``, run it, add the leak check; the assertions, the
    resource series and the runner's outcome."""
    from cdb.chaos.run.runner import Options, Runner
    from cdb.chaos.scenario.validate import validate_file

    _write(file, _text(doc, header))
    checked = validate_file(file)
    if checked.scenario is None:
        problems = "; ".join(p.render(str(file)) for p in checked.problems)
        raise InputError(f"the generated soak scenario is invalid: {problems}")
    runner = Runner(checked.scenario, Options(
        report_dir=report_dir, redis_url=infra.redis_url, postgres_url=infra.postgres_url,
        toxiproxy_url=infra.toxiproxy_url))
    outcome = await runner.run()
    samples = runner.target.recording.samples.get(leaks.PROBE_NAME, []) if (
        runner.target is not None) else []
    series = leaks.analyse(leaks.series_of(samples))
    assertions = list(outcome.assertions)
    if doc.get("probes"):
        assertions.append(leaks.assertion(series))
    return assertions, series, outcome


def _failed(assertions: list[Assertion]) -> list[str]:
    return [a.name for a in assertions if a.status == "fail"]


def _recovery(planned: list[Planned], assertions: list[Assertion]) -> list[Recovery]:
    by_name = {a.name: a for a in assertions}
    out = []
    for kind in sorted({p.kind for p in planned}):
        of_kind = [p for p in planned if p.kind == kind]
        times = [m.measured for p in of_kind if (m := by_name.get(f"{p.name} recovered"))
                 is not None and m.measured is not None]
        out.append(Recovery(kind=kind, faults=len(of_kind), measured=len(times),
                            p50_s=percentile(times, 0.5) if times else None,
                            p99_s=percentile(times, 0.99) if times else None,
                            max_s=max(times) if times else None))
    return out


async def soak(spec: SoakSpec, out: Path, infra: Infra | None = None, *,
               check_leaks: bool = True, shrink: bool = True,
               max_trials: int = 30) -> SoakResult:
    """Run the soak of ``spec`` into ``out``; shrink it when it fails."""
    infra = infra or Infra()
    wall0 = time.monotonic()
    planned = schedule(spec)
    probes = [leaks.probe_document()] if check_leaks else None
    doc = document(spec, planned, leak_probes=probes)
    header = (f"cdb scenario soak --mode {spec.mode} --duration {spec.duration:g}s "
              f"--seed {spec.seed}\nfaults: {kinds_of(planned)}")
    assertions, series, outcome = await run_document(doc, out / "soak.yaml", out / "run",
                                                     infra, header)
    verdict = decide(assertions)
    result = SoakResult(
        status=verdict.status, exit_code=verdict.exit_code, reasons=list(verdict.reasons),
        seed=spec.seed, mode=spec.mode, duration_s=spec.duration,
        wall_s=0.0, faults=len(planned), faults_by_kind=kinds_of(planned),
        schedule=[{"name": p.name, "kind": p.kind, "at": p.at, "until": round(p.until, 3)}
                  for p in planned],
        recovery=_recovery(planned, assertions), assertions=assertions,
        series=[SeriesSummary(subject=s.subject, metric=s.metric, samples=len(s.points),
                              slope_per_s=s.slope_per_s, growth=s.growth,
                              threshold=s.threshold, flagged=s.flagged, decides=s.decides)
                for s in series],
        scenario_file=str(out / "soak.yaml"), report_dir=str(out / "run"))
    if verdict.status == "fail" and shrink:
        result.shrunk = await _shrink(spec, planned, _failed(assertions)[0], out, infra,
                                      probes, max_trials)
    result.wall_s = round(time.monotonic() - wall0, 3)
    write_reports(result, series, out, outcome.reports.get("html"))
    return result


async def _shrink(spec: SoakSpec, planned: list[Planned], check: str, out: Path,
                  infra: Infra, probes: list[dict[str, Any]] | None,
                  max_trials: int) -> Shrunk:
    trials: list[Trial] = []

    async def fails(subset: list[Planned]) -> bool:
        n = len(trials) + 1
        doc = document(spec, subset, leak_probes=probes)
        assertions, _, _ = await run_document(doc, out / "shrink" / f"trial-{n}.yaml",
                                              out / "shrink" / f"trial-{n}", infra)
        failed = _failed(assertions)
        trials.append(Trial(faults=tuple(p.name for p in subset), failed=check in failed,
                            checks=tuple(failed)))
        return check in failed

    smallest = await ddmin(planned, fails, max_trials)
    names = ", ".join(p.name for p in smallest) or "no fault"
    doc = document(spec, smallest, leak_probes=probes,
                   title=f"Shrunk from the soak of seed {spec.seed}: {check} fails with "
                         f"{len(smallest)} fault(s) ({names})")
    file = out / "shrunk.yaml"
    header = (f"The smallest schedule found of the failing soak (seed {spec.seed}, "
              f"{len(planned)} faults):\n{len(smallest)} fault(s) that still fail on {check}. "
              f"Reproduce: cdb scenario run {file.name}")
    assertions, _, _ = await run_document(doc, file, out / "shrunk", infra, header)
    return Shrunk(check=check, faults=[p.name for p in smallest], file=str(file),
                  trials=trials, reproduced=check in _failed(assertions))


def _fmt(value: float | None, unit: str = "s") -> str:
    return "-" if value is None else f"{value:.3g}{unit}"


def render_html(result: SoakResult, series: list[leaks.Series], run_report: str | None,
                out: Path) -> str:
    """The soak's page: verdict, faults by kind, recoveries, resource series, shrinking."""
    color = _STATUS.get(result.status, "#777")
    rows = "".join(
        f"<tr><td>{_e(r.kind)}</td><td>{r.faults}</td><td>{r.measured}</td>"
        f"<td>{_fmt(r.p50_s)}</td><td>{_fmt(r.p99_s)}</td><td>{_fmt(r.max_s)}</td></tr>"
        for r in result.recovery)
    checks = "".join(
        f'<tr><td><span class="badge" style="background:{_STATUS.get(a.status, "#777")}">'
        f"{_e(a.status)}</span></td><td>{_e(a.category)}</td><td>{_e(a.name)}</td>"
        f"<td>{_e(a.detail)}</td></tr>" for a in result.assertions
        if a.category in ("invariant", "measurement", "steady-state", "run")
        or a.status != "pass")
    slopes = "".join(
        f"<tr><td>{_e(s.subject)}</td><td>{_e(s.metric)}</td><td>{s.samples}</td>"
        f"<td>{_fmt(s.slope_per_s, '/s')}</td><td>{_fmt(s.growth, '')}</td>"
        f"<td>{_fmt(s.threshold, '')}</td><td>{'LEAK' if s.flagged else ''}"
        f"{'' if s.decides else ' (note)'}</td></tr>" for s in result.series)
    shrunk = ""
    if result.shrunk is not None:
        sh = result.shrunk
        shrunk = (f"<h2>Shrunk</h2><p>{_e(sh.check)} still fails with {len(sh.faults)} "
                  f"fault(s): {_e(', '.join(sh.faults) or 'none')} after {len(sh.trials)} "
                  f"trial(s); <span class=mono>{_e(Path(sh.file).name)}</span> "
                  f"{'reproduces it on its own' if sh.reproduced else 'did NOT reproduce it'}"
                  "</p>")
    link = ""
    if run_report:
        rel = Path(run_report).resolve().relative_to(out.resolve()) if Path(
            run_report).resolve().is_relative_to(out.resolve()) else Path(run_report)
        link = f' <a href="{_e(rel)}">the run\'s timeline report</a>'
    reasons = "".join(f"<li>{_e(r)}</li>" for r in result.reasons)
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>soak {_e(result.status)}'
        f"</title><style>{_CSS}</style></head><body>"
        f'<h1>Soak, seed {result.seed} <span class="badge" style="background:{color}">'
        f"{_e(result.status)}</span></h1><p class=meta>{result.mode} mode, "
        f"{result.duration_s:g}s of faults, {result.faults} fault(s) "
        f"({_e(', '.join(f'{k} {v}' for k, v in result.faults_by_kind.items()))}), "
        f"{result.wall_s:.1f}s wall.{link}</p><ul class=reasons>{reasons}</ul>"
        "<h2>Recovery per fault kind</h2><table><tr><th>kind</th><th>faults</th>"
        f"<th>measured</th><th>p50</th><th>p99</th><th>max</th></tr>{rows}</table>"
        f"<h2>Checks over the whole history</h2><table>{checks}</table>"
        "<h2>Resources (leak check: linear fit over the second half)</h2>"
        f"{leaks.chart(series)}<table><tr><th>subject</th><th>metric</th><th>samples</th>"
        f"<th>slope</th><th>growth</th><th>limit</th><th></th></tr>{slopes}</table>"
        f"{shrunk}</body></html>")


def write_reports(result: SoakResult, series: list[leaks.Series], out: Path,
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
