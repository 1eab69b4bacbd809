"""Scenario runs found in a reports directory (``cdb scenario run`` writes one folder
per run with ``journal.json`` and ``report.html``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cdb.console.views import ChaosRun, CheckView, TimelineStep

MAX_RUNS = 200
MAX_JOURNAL_BYTES = 64 * 1024 * 1024
"""A bigger journal is not opened by the console (one page load must stay cheap)."""


MAX_STEPS = 200


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _timeline(cdb: dict[str, Any]) -> tuple[TimelineStep, ...]:
    """The run's activities, in scenario time, from the journal's ``cdb.activities``."""
    steps = []
    for a in (cdb.get("activities") or [])[:MAX_STEPS]:
        if not isinstance(a, dict) or _number(a.get("t_start")) is None:
            continue
        effect = a.get("effect") if isinstance(a.get("effect"), dict) else {}
        assert isinstance(effect, dict)
        name = str(a.get("name") or a.get("key") or "?")
        kind = str(a.get("type") or a.get("kind") or "")
        steps.append(TimelineStep(
            t_start=float(a["t_start"]), t_end=_number(a.get("t_end")),
            phase=str(a.get("phase", "")), what=f"{name} ({kind})" if kind else name,
            status=str(a.get("status", "?")),
            evidence=str(a.get("error") or effect.get("evidence") or "")[:300]))
    steps.sort(key=lambda s: s.t_start)
    return tuple(steps)


def _run(root: Path, journal: Path) -> ChaosRun | None:
    try:
        if journal.stat().st_size > MAX_JOURNAL_BYTES:
            return None
        doc: dict[str, Any] = json.loads(journal.read_text(errors="replace"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    cdb = doc.get("cdb") if isinstance(doc.get("cdb"), dict) else {}
    assert isinstance(cdb, dict)
    experiment = doc.get("experiment") if isinstance(doc.get("experiment"), dict) else {}
    assert isinstance(experiment, dict)
    html = journal.parent / "report.html"
    checks = [(str(a.get("name", "?")), str(a.get("status", "?")))
              for a in cdb.get("assertions") or [] if isinstance(a, dict)]
    duration = doc.get("duration")
    return ChaosRun(
        name=journal.parent.relative_to(root).as_posix(),
        scenario=str(experiment.get("title") or cdb.get("scenario_file") or "?"),
        verdict=str(cdb.get("verdict") or doc.get("status") or "?"),
        started=str(doc.get("start") or ""),
        duration_s=float(duration) if isinstance(duration, int | float) else None,
        mode=str(cdb.get("mode") or ""),
        reasons=tuple(str(r) for r in cdb.get("reasons") or []),
        assertions=tuple(checks),
        html=html.relative_to(root).as_posix() if html.is_file() else "",
        checks=tuple(CheckView(category=str(a.get("category", "")), name=str(a.get("name", "?")),
                               status=str(a.get("status", "?")),
                               detail=str(a.get("detail") or "")[:300])
                     for a in cdb.get("assertions") or [] if isinstance(a, dict)),
        timeline=_timeline(cdb),
    )


def find_runs(root: Path) -> list[ChaosRun]:
    """The runs under ``root`` (up to three folders deep), newest first."""
    if not root.is_dir():
        return []
    journals = [p for depth in ("*", "*/*", "*/*/*") for p in root.glob(f"{depth}/journal.json")]
    journals.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    runs = [_run(root, j) for j in journals[:MAX_RUNS]]
    return [r for r in runs if r is not None]


def report_file(root: Path, name: str) -> Path | None:
    """``root/name`` if it is a ``report.html`` inside ``root`` (no way out of it)."""
    if not name.endswith("report.html") or "\\" in name:
        return None
    base = root.resolve()
    path = (base / name).resolve()
    if not path.is_relative_to(base) or path.name != "report.html" or not path.is_file():
        return None
    return path
