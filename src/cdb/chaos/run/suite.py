"""Every scenario of a directory in one go: one aggregated JUnit file, one index page.

Each scenario runs as ``cdb scenario run`` would run it (its own report directory
under the output directory), one after the other. A scenario that cannot run (invalid,
a mode it does not support) is listed as ``unknown`` with the reason, never left out.
The exit code is the worst verdict: any fail gives 1, else any unknown gives 2, else 0.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import msgspec

from cdb.chaos.history.recording import now_iso
from cdb.chaos.reports.html import CSS, STATUS, escape

OWN_SERVERS: Final = frozenset({"redis_down", "postgres_down", "kill", "restart", "stop",
                                "exchange"})
"""Faults after which a run gets its own Redis and PostgreSQL, never the shared ones: a
server taken down, and the process and exchange faults, whose recoveries are timed (a
shared server's other tenants must not be part of what is measured)."""


class ScenarioResult(msgspec.Struct, kw_only=True):
    """One scenario's line in the index."""

    file: str
    title: str
    status: str
    exit_code: int
    mode: str = ""
    seed: int | None = None
    duration_s: float = 0.0
    reasons: list[str] = msgspec.field(default_factory=list)
    report_dir: str = ""
    outcome: dict[str, Any] | None = None
    """The run's outcome as ``cdb scenario run --json`` prints it (None: not run)."""


class Summary(msgspec.Struct, kw_only=True):
    status: str
    exit_code: int
    started: str
    duration_s: float
    results: list[ScenarioResult]
    reports: dict[str, str] = msgspec.field(default_factory=dict)


def worst(codes: list[int]) -> int:
    """The exit code of a set of verdicts: fail (1) over unknown (2) over pass (0)."""
    if 1 in codes:
        return 1
    return 2 if 2 in codes else 0


_STATUS_OF: Final = {0: "pass", 1: "fail", 2: "unknown"}


def _uses_infra_faults(document: dict[str, Any]) -> bool:
    text = json.dumps(document.get("timeline") or [])
    return any(f'"type": "{kind}"' in text for kind in OWN_SERVERS)


async def run_all(files: list[Path], out: Path, *, mode: str | None = None,
                  seed: int | None = None, redis_url: str | None = None,
                  postgres_url: str | None = None,
                  on_result: Callable[[ScenarioResult], None] | None = None) -> Summary:
    """Run ``files`` one after the other into ``out``; write the index and the JUnit.

    Args:
        mode: run every scenario in this mode (default: each one's own).
        redis_url, postgres_url: shared servers for the runs without an infrastructure
            fault (each run keeps to its own namespace and schema).
        on_result: called after each scenario (progress).
    """
    from cdb.chaos.run.runner import Options, Runner
    from cdb.chaos.scenario.validate import validate_file
    from cdb.errors import CdbError

    started, wall0 = now_iso(), time.monotonic()
    results: list[ScenarioResult] = []
    for file in files:
        check = validate_file(file)
        report_dir = out / file.stem
        if check.scenario is None:
            problems = [p.render(str(file)) for p in check.problems if p.severity == "error"]
            result = ScenarioResult(file=str(file), title=file.stem, status="unknown",
                                    exit_code=2, reasons=["invalid: " + "; ".join(problems)])
        else:
            sc = check.scenario
            own = _uses_infra_faults(sc.document)
            try:
                runner = Runner(sc, Options(
                    mode=mode, seed=seed, report_dir=report_dir,
                    redis_url=None if own else redis_url,
                    postgres_url=None if own else postgres_url, http_port=None))
            except CdbError as exc:
                result = ScenarioResult(file=str(file), title=sc.title, status="unknown",
                                        exit_code=2, reasons=[f"not run: {exc}"])
            else:
                outcome = await runner.run()
                result = ScenarioResult(
                    file=str(file), title=sc.title, status=outcome.verdict.status,
                    exit_code=outcome.verdict.exit_code, mode=outcome.mode, seed=outcome.seed,
                    duration_s=outcome.duration_s, reasons=list(outcome.verdict.reasons),
                    report_dir=str(report_dir), outcome=msgspec.to_builtins(outcome))
        results.append(result)
        if on_result is not None:
            on_result(result)
    code = worst([r.exit_code for r in results]) if results else 2
    summary = Summary(status=_STATUS_OF[code], exit_code=code, started=started,
                      duration_s=round(time.monotonic() - wall0, 3), results=results)
    write_reports(summary, out)
    return summary


def _not_run_suite(result: ScenarioResult) -> ET.Element:
    suite = ET.Element("testsuite", {"name": result.title, "tests": "1", "failures": "0",
                                     "errors": "0", "skipped": "1", "time": "0"})
    case = ET.SubElement(suite, "testcase", {
        "classname": f"cdb.scenario.{Path(result.file).stem}", "name": "run"})
    ET.SubElement(case, "skipped", {"message": "unknown: " + "; ".join(result.reasons)})
    return suite


def junit(summary: Summary) -> bytes:
    """One ``testsuites`` with each scenario's ``testsuite`` (one test case per assertion)."""
    suites = ET.Element("testsuites", {"name": "cdb scenarios"})
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for result in summary.results:
        path = Path(result.report_dir) / "junit.xml"
        # The file this run has just written itself (not outside input).
        found = ET.parse(path).getroot().findall("testsuite") if (  # noqa: S314
            result.outcome is not None and path.is_file()) else [_not_run_suite(result)]
        for suite in found:
            suites.append(suite)
            for key in totals:
                totals[key] += int(suite.get(key, "0"))
    for key, value in totals.items():
        suites.set(key, str(value))
    suites.set("time", f"{summary.duration_s:.3f}")
    ET.indent(suites)
    data: bytes = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    return data


def index_html(summary: Summary, out: Path) -> str:
    """The index page: each scenario with its verdict, reasons and a link to its report."""
    rows = []
    for r in summary.results:
        report = Path(r.report_dir) / "report.html"
        link = (f'<a href="{escape(report.relative_to(out))}">report</a>'
                if r.outcome is not None and report.is_file() and report.is_relative_to(out)
                else "")
        reasons = "".join(f"<li>{escape(x)}</li>" for x in r.reasons)
        rows.append(
            f'<tr><td><span class="badge" style="background:{STATUS.get(r.status, "#777")}">'
            f"{escape(r.status)}</span></td><td>{escape(Path(r.file).name)}</td><td>{escape(r.title)}"
            f'<ul class="reasons">{reasons}</ul></td><td>{escape(r.mode)}</td>'
            f"<td>{escape(r.seed if r.seed is not None else '')}</td>"
            f"<td>{r.duration_s:.1f}s</td><td>{link}</td></tr>")
    counts = {s: sum(1 for r in summary.results if r.status == s)
              for s in ("pass", "fail", "unknown")}
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>cdb scenarios: '
        f"{escape(summary.status)}</title><style>{CSS}</style></head><body>"
        f'<h1>cdb scenarios <span class="badge" style="background:'
        f'{STATUS.get(summary.status, "#777")}">{escape(summary.status)}</span></h1>'
        f'<p class="meta">{len(summary.results)} scenario(s): {counts["pass"]} pass, '
        f'{counts["fail"]} fail, {counts["unknown"]} unknown; started {escape(summary.started)}, '
        f"{summary.duration_s:.1f}s; exit {summary.exit_code}</p>"
        "<table><tr><th>verdict</th><th>file</th><th>scenario</th><th>mode</th><th>seed</th>"
        f"<th>time</th><th></th></tr>{''.join(rows)}</table></body></html>")


def write_reports(summary: Summary, out: Path) -> dict[str, str]:
    """``junit.xml``, ``index.html`` and ``summary.json`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"junit": out / "junit.xml", "html": out / "index.html",
             "json": out / "summary.json"}
    summary.reports = {k: str(v) for k, v in paths.items()}
    paths["junit"].write_bytes(junit(summary))
    paths["html"].write_text(index_html(summary, out))
    paths["json"].write_bytes(msgspec.json.encode(summary))
    return summary.reports
