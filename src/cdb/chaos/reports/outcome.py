"""Reports of a run: the JSON journal, JUnit XML and a self-contained HTML page.

The journal is a superset of Chaos Toolkit's (``experiment``, ``status``,
``deviated``, ``steady_states``, ``run``, ``rollbacks``, ``start``, ``end``,
``duration``) with everything cdb adds under ``cdb``: verdict and reasons, every
assertion, the seed, the plan and the whole recording, so a verdict can be checked
after the fact. JUnit has one test case per assertion (unknown ones are skipped, so CI
shows them apart from failures). The HTML page draws the run on one time axis.
"""

from __future__ import annotations

import json
import platform
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import msgspec

from cdb import __version__
from cdb.chaos.history.recording import ActivityRecord
from cdb.chaos.reports.html import render_html
from cdb.chaos.reports.record import Outcome, RunRecord
from cdb.chaos.scenario.model import mask_secrets

_SECRET_HINTS = ("PASSWORD", "SECRET", "TOKEN", "KEY")


def _ctk_activity(act: ActivityRecord) -> dict[str, Any]:
    duration = (act.t_end - act.t_start) if act.t_end is not None else 0.0
    out: dict[str, Any] = {
        "activity": {"type": "probe" if act.kind == "probe" else "action", "name": act.name,
                     "provider": {"type": act.type, **act.params}},
        "output": act.output, "status": "succeeded" if act.status == "succeeded" else "failed",
        "start": act.started, "end": act.ended, "duration": round(duration, 6),
    }
    if act.error:
        out["exception"] = [act.error]
    if act.tolerance_met is not None:
        out["tolerance_met"] = act.tolerance_met
    return out


def _scrub(env: dict[str, str]) -> dict[str, str]:
    return {k: ("***" if any(h in k.upper() for h in _SECRET_HINTS) and not k.endswith("_FILE")
                else v) for k, v in env.items()}


def journal(record: RunRecord, outcome: Outcome) -> dict[str, Any]:
    """The journal document of a run."""
    rec = record.recording
    activities = rec.activities if rec else []
    steady = {p: [a for a in activities if a.phase == f"steady-state-{p}"]
              for p in ("before", "after")}
    before_ok = all(a.tolerance_met for a in steady["before"])
    after_ok = all(a.tolerance_met for a in steady["after"])
    if outcome.interrupted:
        status = "interrupted"
    elif outcome.error:
        status = "aborted"
    elif not before_ok:
        status = "failed"
    else:
        status = "completed"
    assertions = msgspec.to_builtins(outcome.assertions)
    return {
        "chaoslib-version": None,
        "platform": platform.platform(),
        "node": platform.node(),
        "experiment": record.scenario.document,
        "start": outcome.started,
        "end": outcome.ended,
        "duration": outcome.duration_s,
        "status": status,
        "deviated": bool(steady["after"]) and not after_ok,
        "steady_states": {
            "before": {"steady_state_met": before_ok,
                       "probes": [_ctk_activity(a) for a in steady["before"]]},
            "after": {"steady_state_met": after_ok,
                      "probes": [_ctk_activity(a) for a in steady["after"]]}
            if steady["after"] else None,
            "during": [],
        },
        "run": [_ctk_activity(a) for a in activities if a.phase in ("timeline", "method")],
        "rollbacks": [_ctk_activity(a) for a in activities if a.phase == "rollback"],
        "cdb": {
            "version": __version__,
            "scenario_file": record.scenario.file,
            "verdict": outcome.verdict.status,
            "exit_code": outcome.verdict.exit_code,
            "reasons": list(outcome.verdict.reasons),
            "seed": outcome.seed,
            "mode": outcome.mode,
            "namespace": outcome.namespace,
            "error": outcome.error,
            "assertions": assertions,
            "measurements": {a.name: a.measured for a in outcome.assertions
                             if a.category == "measurement"},
            "plan": {
                "warmup": record.plan.warmup, "timeline_end": record.t_end,
                "settle": record.scenario.settle, "market_duration": record.plan.market_duration,
                "shapes": msgspec.to_builtins(record.plan.shapes),
                "proxies": sorted(f"{s}->{d}" for s, d in record.plan.proxies),
                "steps": [{"key": s.key, "kind": s.kind, "type": s.provider.type, "at": s.at,
                           "duration": s.duration, "params": s.provider.params}
                          for s in record.steps],
            },
            "phases_wall_s": record.phases,
            "left_behind": list(record.left_behind),
            "applied": record.applied,
            "undone": record.undone,
            "activities": msgspec.to_builtins(activities),
            "summary": record.summary,
            "env": _scrub(rec.env) if rec else {},
            "recording": rec.to_builtins() if rec else None,
        },
    }


def junit(record: RunRecord, outcome: Outcome) -> bytes:
    """JUnit XML: one test case per assertion."""
    stem = Path(record.scenario.file).stem
    failures = sum(1 for a in outcome.assertions if a.status == "fail")
    skipped = sum(1 for a in outcome.assertions if a.status == "unknown")
    attrs = {"tests": str(len(outcome.assertions)), "failures": str(failures),
             "errors": "0", "skipped": str(skipped), "time": f"{outcome.duration_s:.3f}"}
    suites = ET.Element("testsuites", {"name": "cdb scenarios", **attrs})
    suite = ET.SubElement(suites, "testsuite", {
        "name": record.scenario.title, **attrs, "timestamp": outcome.started,
        "hostname": platform.node()})
    props = ET.SubElement(suite, "properties")
    for name, value in (("verdict", outcome.verdict.status), ("seed", str(outcome.seed)),
                        ("mode", outcome.mode), ("namespace", outcome.namespace),
                        ("scenario", record.scenario.file)):
        ET.SubElement(props, "property", {"name": name, "value": value})
    for a in outcome.assertions:
        case = ET.SubElement(suite, "testcase", {
            "classname": f"cdb.scenario.{stem}.{a.category}", "name": a.name,
            "time": f"{a.measured or 0:.3f}"})
        if a.status == "fail":
            failure = ET.SubElement(case, "failure", {"message": a.detail, "type": a.category})
            failure.text = "\n".join(a.evidence) or a.detail
        elif a.status == "unknown":
            ET.SubElement(case, "skipped", {"message": f"unknown: {a.detail}"})
        else:
            out = ET.SubElement(case, "system-out")
            out.text = a.detail
    ET.indent(suites)
    data: bytes = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    return data


def write_all(record: RunRecord, outcome: Outcome) -> dict[str, str]:
    """Write the three reports into the run's report directory; returns their paths."""
    directory = Path(record.report_dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "journal.json", "junit": directory / "junit.xml",
             "html": directory / "report.html"}
    outcome.reports = {k: str(v) for k, v in paths.items()}
    secrets = record.scenario.secrets
    # Values the scenario read from the environment never reach a report.
    doc = mask_secrets(journal(record, outcome), secrets)
    paths["json"].write_text(json.dumps(doc, indent=1, default=str))
    shown = outcome
    if secrets:
        shown = msgspec.convert(mask_secrets(msgspec.to_builtins(outcome), secrets),
                                type(outcome))
    paths["junit"].write_bytes(junit(record, shown))
    paths["html"].write_text(render_html(doc))
    return outcome.reports
