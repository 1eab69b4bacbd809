"""``cdb scenario soak``: a seeded nemesis, the whole history checked, leaks, shrinking.

The nemesis (``chaos.soak.nemesis``) draws the schedule and writes it as a scenario
(``soak.yaml``); the runner runs it like any scenario (every invariant over the whole
recorded run, a recovery measurement per fault that takes a service down, the same
verdict rules), with the ``resources`` probe sampled throughout for the leak check
(``chaos.checks.leaks``). A failing soak is shrunk (``chaos.soak.shrink``): the same seed rerun
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

from cdb.chaos.checks import leaks
from cdb.chaos.checks.verdict import Assertion, decide
from cdb.chaos.soak.nemesis import Planned, SoakSpec, document, kinds_of, schedule
from cdb.chaos.soak.report import Recovery, SeriesSummary, Shrunk, SoakResult, write_reports
from cdb.chaos.soak.shrink import Trial, ddmin
from cdb.errors import InputError


class Infra(msgspec.Struct, frozen=True, kw_only=True):
    """Servers the runs may share (distributed mode), as ``cdb scenario run`` takes them."""

    redis_url: str | None = None
    postgres_url: str | None = None
    toxiproxy_url: str | None = None


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
