"""``cdb scenario``: validate, publish the schema of, list and run chaos scenarios.

Exit codes: ``validate`` 0 valid, 2 invalid; ``run`` 0 pass, 1 fail, 2 unknown (also
for an invalid scenario and for Ctrl-C or SIGTERM, after the undos ran, the pipeline
was stopped and the reports were written). A run killed outright (SIGKILL) takes its
service processes with it (see ``cdb.runtime.supervisor``).

A scenario file is code: its ``process``, ``python`` and ``http`` providers and its
``env`` configuration run only with ``--allow-exec``; ``validate`` and ``--dry-run``
list them. Text from the file is printed as text (rich markup is never applied to
it), and values it read from the environment are masked in everything shown.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import typer
from rich.console import Console
from rich.markup import escape

scenario_app = typer.Typer(help="Chaos scenarios: validate, schema, list, run.",
                           no_args_is_help=True)
T = TypeVar("T")

_out = Console()
_err = Console(stderr=True)


def _invalid(results: list[object], as_json: bool) -> int:
    from cdb.chaos.scenario.validate import Result

    bad = 0
    payload = []
    for r in results:
        assert isinstance(r, Result)
        bad += 0 if r.ok else 1
        payload.append({"file": r.file, "valid": r.ok,
                        "problems": msgspec.to_builtins(list(r.problems))})
        if as_json:
            continue
        for p in r.problems:
            style = "red" if p.severity == "error" else "yellow"
            _err.print(p.render(r.file), style=style, highlight=False, soft_wrap=True,
                       markup=False)
        if r.ok:
            _out.print(f"{r.file}: valid", style="green", highlight=False, markup=False)
        else:
            n = sum(1 for p in r.problems if p.severity == "error")
            _err.print(f"{r.file}: {n} problem(s)", style="bold red", highlight=False,
                       markup=False)
    if as_json:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    return bad


@scenario_app.command("validate")
def validate(
    files: Annotated[list[Path], typer.Argument(help="Scenario YAML files.")],
    as_json: Annotated[bool, typer.Option("--json", help="Problems as JSON.")] = False,
) -> None:
    """Check scenarios against the schema; every problem with its path and line."""
    from cdb.chaos.scenario.validate import validate_file

    results: list[object] = [validate_file(f) for f in files]
    if _invalid(results, as_json):
        sys.exit(2)


@scenario_app.command("schema")
def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Write to a file.")] = None,
) -> None:
    """Print the JSON Schema of scenarios (draft 2020-12)."""
    from cdb.chaos.scenario.schema import dumps

    text = dumps()
    if output is None:
        sys.stdout.write(text + "\n")
    else:
        output.write_text(text + "\n")
        _err.print(f"wrote {output}")


def scenario_dirs(extra: Path | None = None) -> list[Path]:
    """Where shipped scenarios are looked for: ``--dir``, ``./scenarios``, the source tree."""
    import cdb

    candidates = [extra] if extra else []
    candidates += [Path("scenarios"), Path(cdb.__file__).resolve().parents[2] / "scenarios"]
    seen: list[Path] = []
    for c in candidates:
        if c is not None and c.is_dir() and c.resolve() not in [s.resolve() for s in seen]:
            seen.append(c)
    return seen


@scenario_app.command("list")
def list_(
    directory: Annotated[Path | None, typer.Option("--dir", help="Where to look.")] = None,
) -> None:
    """Show the shipped scenarios: title, modes, what they need, whether they are valid."""
    from cdb.chaos.scenario.validate import validate_file

    dirs = scenario_dirs(directory)
    files = sorted({f.resolve(): f for d in dirs for f in d.glob("*.yaml")}.values())
    if not files:
        _err.print("no scenarios found (looked in ./scenarios and the source tree)")
        sys.exit(2)
    where = ", ".join(sorted({str(f.parent) for f in files}))
    _out.print(f"[bold]scenarios in {escape(where)}[/]", highlight=False)
    for f in files:
        sc = validate_file(f).scenario
        if sc is None:
            _out.print(f"  {escape(f.name)}  [red]invalid[/] (cdb scenario validate "
                       f"{escape(str(f))})", highlight=False)
            continue
        needs = ", ".join(sc.pipeline.requires) or "nothing more"
        runs = "; [yellow]runs code: needs --allow-exec[/]" if sc.executes else ""
        # One scenario per block, readable at any width (a table folds every column).
        _out.print(f"  [bold]{escape(f.name)}[/]  [green]valid[/]{runs}", highlight=False)
        _out.print(f"    {sc.title}", highlight=False, markup=False)
        _out.print(f"    modes: {', '.join(sc.pipeline.modes)}; needs: {needs}; "
                   f"tags: {escape(', '.join(sc.tags)) or '-'}", highlight=False)


@scenario_app.command("run")
def run(
    file: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
    mode: Annotated[str | None, typer.Option(help="embedded or distributed (default: the "
                                                   "scenario's).")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the scenario's seed.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and show the plan; "
                                                            "start nothing.")] = False,
    report_dir: Annotated[Path | None, typer.Option(help="Where the reports go (default "
                                                         "cdb-reports/<name>/<ns>).")] = None,
    http_port: Annotated[int, typer.Option(help="Serve the coordinator's /health and "
                                                "/metrics on this port (0: a free one, "
                                                "shown at the start; -1: none).")] = 0,
    redis: Annotated[str | None, typer.Option(help="Distributed: an existing Redis "
                                                   "(redis://:pw@host:port/db), shared "
                                                   "through the run's namespace.")] = None,
    postgres: Annotated[str | None, typer.Option(help="Distributed: an existing PostgreSQL "
                                                      "(postgresql://user:pw@host:port/db); "
                                                      "the run uses its own schema.")] = None,
    toxiproxy: Annotated[str | None, typer.Option(help="Distributed: a Toxiproxy server's "
                                                       "API (http://host:8474) for the "
                                                       "network faults, instead of cdb's own "
                                                       "proxy.")] = None,
    attach: Annotated[bool, typer.Option(
        "--attach", help="Run against the pipeline `cdb up` runs (found in --redis or "
        "REDIS_URL, namespace --namespace or SERVICE_INSTANCE_NAME); faults it cannot "
        "inject there end unknown.")] = False,
    namespace: Annotated[str | None, typer.Option(help="--attach: the pipeline's "
                                                       "SERVICE_INSTANCE_NAME.")] = None,
    proxy: Annotated[str | None, typer.Option(help="--attach: the API of the proxy placed "
                                                   "in front of Redis/PostgreSQL (network "
                                                   "faults).")] = None,
    quiet: Annotated[bool, typer.Option(help="No live progress.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
    allow_exec: Annotated[bool, typer.Option(
        "--allow-exec", help="Let the file run commands, Python functions and HTTP requests "
        "(process, python, http providers) and read the environment (env configuration): "
        "a scenario file deserves the trust of a script.")] = False,
) -> None:
    """Run a scenario against a pipeline it starts (or, --attach, one running); exit 0
    pass, 1 fail, 2 unknown."""
    from cdb.chaos.run.progress import LiveProgress, print_summary
    from cdb.chaos.run.runner import Options, Runner
    from cdb.chaos.scenario.model import mask_secrets
    from cdb.chaos.scenario.validate import validate_file
    from cdb.errors import CdbError
    from cdb.observability import logging as cdb_logging

    result = validate_file(file)
    if not result.ok or result.scenario is None:
        _invalid([result], False)
        sys.exit(2)
    scenario = result.scenario
    cdb_logging.register_secrets(scenario.secrets)
    try:
        _check_options(mode, http_port, None if attach else redis, None if attach else
                       postgres, toxiproxy)
        if attach:
            from cdb.cli_scenario_attach import attach_config, attach_runner, find_pipeline

            config = attach_config(redis, postgres, proxy or toxiproxy, namespace, mode)
            if not dry_run:
                find_pipeline(config)
            runner = attach_runner(scenario, Options(
                mode="distributed", seed=seed, dry_run=dry_run, report_dir=report_dir,
                http_port=None if http_port < 0 else http_port,
                allow_exec=allow_exec), config)
        else:
            runner = Runner(scenario, Options(
                mode=mode, seed=seed, dry_run=dry_run, report_dir=report_dir,
                http_port=None if http_port < 0 else http_port,
                redis_url=redis, postgres_url=postgres, toxiproxy_url=toxiproxy,
                allow_exec=allow_exec))
    except CdbError as exc:
        _err.print(f"error: {mask_secrets(str(exc), scenario.secrets)}", style="red",
                   highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    if dry_run:
        _print_plan(runner, allow_exec)
        return
    runner.report_dir.mkdir(parents=True, exist_ok=True)
    log = (runner.report_dir / "coordinator.log").open("a")
    cdb_logging.configure("WARNING", stream=log)
    console = _err
    show = not quiet and not as_json
    interrupted = False
    try:
        with LiveProgress(console) if show else _nothing() as progress:
            if progress is not None:
                runner.progress = _Masked(progress, scenario.secrets)
            try:
                _run_to_end(_until_terminated(runner.run()))
            except (KeyboardInterrupt, asyncio.CancelledError):
                interrupted = True
    finally:
        log.close()
    outcome = runner.outcome
    if outcome is None:
        _err.print("the run ended before it could conclude", style="red")
        sys.exit(2)
    if scenario.secrets:
        outcome = msgspec.convert(mask_secrets(msgspec.to_builtins(outcome), scenario.secrets),
                                  type(outcome))
    if as_json:
        sys.stdout.write(msgspec.json.encode(outcome).decode() + "\n")
    else:
        print_summary(_out, outcome, scenario.title)
    if interrupted:
        _err.print("interrupted: faults undone, reports written", style="yellow")
    sys.exit(outcome.verdict.exit_code)


@scenario_app.command("run-all")
def run_all(
    directory: Annotated[Path, typer.Argument(help="A directory of scenario YAML files.")],
    mode: Annotated[str | None, typer.Option(help="Run every scenario in this mode "
                                                   "(default: each one's own).")] = None,
    seed: Annotated[int | None, typer.Option(help="Override every scenario's seed.")] = None,
    report_dir: Annotated[Path, typer.Option(help="Where the index, the JUnit file and "
                                                  "each scenario's reports go.")] = Path(
        "cdb-reports/run-all"),
    redis: Annotated[str | None, typer.Option(help="Distributed: a shared Redis for the runs "
                                                   "without an infrastructure fault.")] = None,
    postgres: Annotated[str | None, typer.Option(help="Distributed: a shared PostgreSQL for "
                                                      "the runs without an infrastructure "
                                                      "fault.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run every scenario in DIRECTORY; one JUnit file, one index page; exit with the
    worst verdict (1 if one failed, else 2 if one was unknown, else 0)."""
    from cdb.chaos.run.suite import ScenarioResult
    from cdb.chaos.run.suite import run_all as run_every
    from cdb.errors import CdbError

    files = sorted(directory.glob("*.yaml")) if directory.is_dir() else []
    if not files:
        _err.print(f"no scenarios (*.yaml) in {directory}", highlight=False, markup=False)
        sys.exit(2)
    try:
        _check_options(mode, -1, redis, postgres, None)
    except CdbError as exc:
        _err.print(f"error: {exc}", style="red", highlight=False, markup=False)
        sys.exit(2)
    def shown(r: ScenarioResult) -> None:
        style = {"pass": "green", "fail": "red"}.get(r.status, "yellow")
        _err.print(f"{r.status:<8} {Path(r.file).name} ({r.duration_s:.1f}s)", style=style,
                   highlight=False, markup=False)
        for reason in r.reasons:
            _err.print(f"  - {reason}", highlight=False, markup=False, soft_wrap=True)

    summary = _logged_run(report_dir, "the running scenario's faults undone", lambda: run_every(
        files, report_dir, mode=mode, seed=seed, redis_url=redis, postgres_url=postgres,
        on_result=shown))
    if as_json:
        sys.stdout.write(msgspec.json.encode(summary).decode() + "\n")
    else:
        _out.print(f"verdict {summary.status} (exit {summary.exit_code}): "
                   f"{len(summary.results)} scenario(s) in {summary.duration_s:.1f}s",
                   highlight=False, markup=False)
        for kind, path in summary.reports.items():
            _out.print(f"  {kind:<5} {path}", highlight=False, markup=False)
    sys.exit(summary.exit_code)


@scenario_app.command("soak")
def soak(
    duration: Annotated[str, typer.Option(help="How long faults are injected (scenario "
                                               "time: market time, compressed in embedded "
                                               "mode), e.g. 120s, 30m.")] = "120s",
    seed: Annotated[int, typer.Option(help="Drives the schedule and the run.")] = 1,
    mode: Annotated[str, typer.Option(help="embedded or distributed.")] = "distributed",
    weight: Annotated[list[str] | None, typer.Option(
        help="KIND=WEIGHT, repeatable (0 leaves a kind out); kinds: stop, kill, restart, "
             "redis_down, postgres_down, network, network_down, exchange, flash_crash, "
             "gap, stale, flat, signal_flood.")] = None,
    mean_gap: Annotated[str, typer.Option(help="Mean time between two faults.")] = "6s",
    max_overlap: Annotated[int, typer.Option(help="Faults active at once, at most (1: no "
                                                  "overlap).")] = 2,
    recover_within: Annotated[str, typer.Option(help="The bound on each recovery.")] = "30s",
    sabotage: Annotated[list[str] | None, typer.Option(
        help="Test-only: BUG=WEIGHT, a deliberate bug the nemesis may also draw "
             "(embedded mode; e.g. duplicate_fills=1, leak_tasks=1).")] = None,
    shrink: Annotated[bool, typer.Option(help="On a failure, find the smallest failing "
                                              "schedule (shrunk.yaml).")] = True,
    max_trials: Annotated[int, typer.Option(help="Reruns the shrinking may take.")] = 30,
    leaks: Annotated[bool, typer.Option(help="Sample resources and check for leaks.")] = True,
    report_dir: Annotated[Path, typer.Option(help="Where the reports go.")] = Path(
        "cdb-reports/soak"),
    redis: Annotated[str | None, typer.Option(help="Distributed: a shared Redis (then no "
                                                   "redis_down).")] = None,
    postgres: Annotated[str | None, typer.Option(help="Distributed: a shared PostgreSQL "
                                                      "(then no postgres_down).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the schedule as a "
                                                            "scenario; run nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """A seeded random schedule of faults for DURATION, checked over the whole history;
    leaks flagged; a failure shrunk to a small scenario. Exit 0 pass, 1 fail, 2 unknown."""
    import yaml

    from cdb.chaos.scenario.registry import parse_duration
    from cdb.chaos.soak.nemesis import SoakSpec, document, kinds_of, schedule
    from cdb.chaos.soak.session import Infra
    from cdb.chaos.soak.session import soak as run_soak
    from cdb.cli_scenario_soak import pairs, print_soak
    from cdb.errors import CdbError

    try:
        _check_options(mode, -1, redis, postgres, None)
        weights = pairs("--weight", weight or [])
        if redis:
            weights["redis_down"] = 0
        if postgres:
            weights["postgres_down"] = 0
        spec = SoakSpec(duration=parse_duration(duration), seed=seed, mode=mode,  # type: ignore[arg-type]
                        weights=weights, mean_gap=parse_duration(mean_gap),
                        max_overlap=max_overlap, recover_within=parse_duration(recover_within),
                        sabotage=pairs("--sabotage", sabotage or []))
    except (CdbError, ValueError) as exc:
        _err.print(f"error: {exc}", style="red", highlight=False, markup=False)
        sys.exit(2)
    if dry_run:
        planned = schedule(spec)
        sys.stdout.write(f"# faults: {kinds_of(planned)}\n")
        from cdb.chaos.checks.leaks import probe_document

        doc = document(spec, planned, leak_probes=[probe_document()] if leaks else None)
        sys.stdout.write(yaml.safe_dump(doc, sort_keys=False, width=100))
        return
    result = _logged_run(report_dir, "faults undone", lambda: run_soak(
        spec, report_dir, Infra(redis_url=redis, postgres_url=postgres), check_leaks=leaks,
        shrink=shrink, max_trials=max_trials))
    if as_json:
        sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    else:
        print_soak(_out, result)
    sys.exit(result.exit_code)


def _check_options(mode: str | None, http_port: int, redis: str | None,
                   postgres: str | None, toxiproxy: str | None) -> None:
    """One ``CdbError`` line for a bad mode, port or URL on the command line."""
    from cdb.errors import CdbError
    from cdb.urls import check_url, parse_port

    if mode is not None and mode not in ("embedded", "distributed"):
        raise CdbError(f"--mode: {mode!r} is not embedded or distributed")
    if http_port >= 0:
        parse_port("--http-port", http_port, allow_zero=True)
    for option, url, schemes in (
        ("--redis", redis, ("redis", "rediss")),
        ("--postgres", postgres, ("postgresql", "postgres", "postgresql+asyncpg")),
        ("--toxiproxy", toxiproxy, ("http", "https")),
    ):
        if url is not None:
            check_url(option, url, schemes)


def _print_plan(runner: Any, allow_exec: bool) -> None:
    """``--dry-run``: the plan, then everything the file would execute."""
    from cdb.chaos.scenario.model import mask_secrets

    scenario = runner.scenario
    for line in runner.describe_plan():
        _out.print(mask_secrets(line, scenario.secrets), highlight=False, markup=False)
    for e in scenario.executes:
        gate = "" if allow_exec else " (needs --allow-exec)"
        _out.print(f"executes: {e.what} at {e.path}{gate}", highlight=False, markup=False)


def _logged_run(report_dir: Path, undone: str,
                start: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``start()`` to its end with the coordinator's log in ``report_dir``; Ctrl-C or
    SIGTERM cancel it (its faults are undone) and exit 2."""
    from cdb.observability import logging as cdb_logging

    report_dir.mkdir(parents=True, exist_ok=True)
    log = (report_dir / "coordinator.log").open("a")
    cdb_logging.configure("WARNING", stream=log)
    done: list[T] = []

    async def main() -> None:
        done.append(await start())

    try:
        _run_to_end(_until_terminated(main()))
    except (KeyboardInterrupt, asyncio.CancelledError):
        _err.print(f"interrupted: {undone}", style="yellow")
        sys.exit(2)
    finally:
        log.close()
    return done[0]


async def _until_terminated(run: Coroutine[Any, Any, object]) -> None:
    """Run ``run``; SIGTERM and Ctrl-C cancel it (it then undoes, stops and reports)."""
    task = asyncio.ensure_future(run)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


_LEFTOVER_S = 5.0


def _run_to_end(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run``, except that tasks still pending at the end (a client stuck in
    its cleanup) get a bounded time to end instead of holding the process forever."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main)
    finally:
        try:
            left = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.wait(left, timeout=_LEFTOVER_S))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


class _Masked:
    """A progress sink that masks the values the scenario read from the environment."""

    def __init__(self, inner: Any, secrets: tuple[str, ...]) -> None:
        self.inner = inner
        self.secrets = secrets

    def update(self, state: dict[str, Any]) -> None:
        from cdb.chaos.scenario.model import mask_secrets

        self.inner.update(mask_secrets(state, self.secrets) if self.secrets else state)

    def log(self, text: str) -> None:
        from cdb.chaos.scenario.model import mask_secrets

        self.inner.log(mask_secrets(text, self.secrets))


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
