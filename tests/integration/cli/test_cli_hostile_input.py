"""Issue 14, hostile and sloppy input: one regression test per row of its table.

Each runs the ``cdb`` command as a user would (a subprocess) and asserts the exit code
and the one-line message; the bombs also finish in under 2 s and 100 MB, measured
inside a subprocess around the call that parses the input (imports excluded).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

BOMB_SECONDS = 2.0
BOMB_MB = 100.0


def cdb(*args: str, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("RISK_", "ESS_", "CDB_", "SERVICE_", "LOG_"))}
    full = {**base, "NO_COLOR": "1", "COLUMNS": "200", "CDB_SECRETS_DIR": "/nonexistent",
            **(env or {})}
    return subprocess.run([sys.executable, "-m", "cdb", *args], env=full, cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single error line of a failed command (and no traceback)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines, result
    return "\n".join(lines)


_MEASURE = textwrap.dedent("""
    import json, resource, sys, time
    from cdb.chaos.scenario.validate import validate_text
    validate_text("title: warm-up\\n")  # schema built, modules imported
    text = open(sys.argv[1], encoding="utf-8").read()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    result = validate_text(text, sys.argv[1])
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "mb": (after - before) / 1024,
                      "problems": [p.render(result.file) for p in result.problems]}))
""")


def measure_validate(path: Path) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True,
                         text=True, timeout=120, check=True)
    measured: dict[str, object] = json.loads(out.stdout)
    return measured


def assert_bounded(path: Path, expect: str) -> None:
    """``cdb scenario validate`` refuses ``path`` in one line, quickly and in little memory."""
    result = cdb("scenario", "validate", str(path))
    assert result.returncode == 2
    assert expect in one_line_error(result)
    measured = measure_validate(path)
    assert float(measured["seconds"]) < BOMB_SECONDS, measured  # type: ignore[arg-type]
    assert float(measured["mb"]) < BOMB_MB, measured  # type: ignore[arg-type]


# -- a scenario is code ------------------------------------------------------------------

EXEC_SCENARIO = """\
title: runs a command
configuration:
  token: {type: env, key: CHAOS_SECRET}
pipeline: {modes: [embedded]}
timeline:
  - name: touch
    probe: {type: process, path: /usr/bin/touch, arguments: ["{marker}"]}
  - name: call
    probe: {type: python, module: os, func: getcwd}
  - name: send
    action: {type: http, url: "http://127.0.0.1:9/?t=${token}"}
"""


def test_process_python_http_and_env_need_allow_exec(tmp_path: Path) -> None:
    """Row 1: nothing runs without --allow-exec; validate and --dry-run list what would."""
    marker = tmp_path / "created-by-the-scenario"
    path = tmp_path / "exec.yaml"
    path.write_text(EXEC_SCENARIO.replace("{marker}", str(marker)))
    env = {"CHAOS_SECRET": "do-not-show-this-value"}

    run = cdb("scenario", "run", str(path), "--report-dir", str(tmp_path / "r"), env=env)
    assert run.returncode == 2
    message = one_line_error(run)
    assert "--allow-exec" in message
    assert len(message.splitlines()) == 1
    assert not marker.exists()
    assert not (tmp_path / "r").exists()

    valid = cdb("scenario", "validate", str(path), env=env)
    assert valid.returncode == 0
    for what in ("runs the command '/usr/bin/touch", "calls the Python function os.getcwd",
                 "sends an HTTP GET request to http://127.0.0.1:9/?t=***",
                 "reads the environment variable CHAOS_SECRET"):
        assert what in valid.stderr, valid.stderr
    assert "do-not-show-this-value" not in valid.stdout + valid.stderr

    dry = cdb("scenario", "run", str(path), "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("(needs --allow-exec)") == 4
    assert "do-not-show-this-value" not in dry.stdout + dry.stderr
    assert not marker.exists()


def test_env_values_are_masked_in_the_scenario_reports_show() -> None:
    """Row 1: the journal's ``experiment`` is ``Scenario.document``, masked."""
    from cdb.chaos.scenario.model import mask_secrets
    from cdb.chaos.scenario.validate import validate_text

    os.environ["CHAOS_SECRET_2"] = "hunter2-hunter2"
    try:
        result = validate_text(textwrap.dedent("""\
            title: t
            configuration: {pw: {type: env, key: CHAOS_SECRET_2}}
            description: "password ${pw}"
            """))
    finally:
        del os.environ["CHAOS_SECRET_2"]
    assert result.scenario is not None
    assert result.scenario.document["description"] == "password ***"
    assert result.scenario.secrets == ("hunter2-hunter2",)
    nested = {"run": [{"output": "said hunter2-hunter2"}], "n": 5}
    assert mask_secrets(nested, result.scenario.secrets) == {"run": [{"output": "said ***"}],
                                                             "n": 5}


# -- bombs ---------------------------------------------------------------------------------


def test_nested_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    """Row 2: a few hundred bytes of nested aliases (8.8 s and 836 MB before)."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        prev, name = chr(96 + i), chr(97 + i)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size < 700
    assert_bounded(path, "expands to more than 50,000 values")


def test_nested_repeat_in_parallel_is_capped(tmp_path: Path) -> None:
    """Row 3: 10^9 steps from 11 lines are refused, naming the entry's line."""
    path = tmp_path / "repeat.yaml"
    path.write_text(textwrap.dedent("""\
        title: repeat bomb
        timeline:
          - name: g
            repeat: {times: 1000, every: 1}
            parallel:
              - name: h
                repeat: {times: 1000, every: 1}
                parallel:
                  - name: i
                    repeat: {times: 1000, every: 1}
                    probe: {type: health}
        """))
    assert_bounded(path, "repeat.yaml:3:5: error: $.timeline[0]: the timeline expands to "
                         "more than 100,000 steps")


def test_yaml_nested_500_deep_is_one_line(tmp_path: Path) -> None:
    """Row 7: YAML nested 500 deep."""
    path = tmp_path / "deep.yaml"
    path.write_text("title: deep\nx: " + "[" * 500 + "]" * 500 + "\n")
    assert_bounded(path, "nested deeper than 64 levels")


def test_a_5000_digit_number_is_one_line(tmp_path: Path) -> None:
    """Row 7: a 5000-digit number."""
    path = tmp_path / "digits.yaml"
    path.write_text("title: digits\nseed: " + "9" * 5000 + "\n")
    assert_bounded(path, "$.seed: '99999999999999999999...99999999' is not a number cdb can "
                         "use (too many digits)")


# -- secrets, markup, settings ----------------------------------------------------------------


def test_run_never_prints_the_database_password(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Row 4: the URL is shown without its password in the summary and --json."""
    from typer.testing import CliRunner

    from cdb import cli
    from cdb.runtime import embedded

    url = "postgresql+asyncpg://cdb:PASSWORD-123@db.example:5432/cdb"

    class Pipeline:
        def __init__(self, settings: object, options: embedded.RunOptions) -> None:
            self.options = options

        async def run(self, on_progress: object) -> embedded.RunSummary:
            return embedded.RunSummary(
                trades=1, malformed_rows=0, first_errors=[], signals=0, orders=0, fills=0,
                rejections={}, initial_equity="1", equity="1", pnl="0", fees="0",
                max_drawdown_pct="0", open_positions={}, first_ts=1, last_ts=2,
                wall_seconds=0.1, db_url=self.options.db_url, rows={})

    monkeypatch.setattr(embedded, "EmbeddedPipeline", Pipeline)
    monkeypatch.setenv("CDB_SECRETS_DIR", "/nonexistent")
    from cdb.observability import logging as cdb_logging

    try:
        for extra in ((), ("--json",)):
            result = CliRunner().invoke(cli.app, ["run", "--quiet", "--db", url, *extra])
            shown = result.output + capsys.readouterr().out
            assert result.exit_code == 0, shown
            assert "PASSWORD-123" not in shown
            assert "cdb:***@db.example" in shown
    finally:
        # `cdb run` in this process pointed the logs at the runner's stream, which is
        # closed after the test: later tests of this worker would log into it.
        cdb_logging.reset()


def test_sqlite_url_with_a_password_is_one_line(tmp_path: Path) -> None:
    """Row 4: SQLite takes no credentials: one line, without the password."""
    result = cdb("run", "--db", f"sqlite+aiosqlite://cdb:PASSWORD-123@/{tmp_path}/cdb.db")
    assert result.returncode == 2
    message = one_line_error(result)
    assert "cdb:***@" in message
    assert "PASSWORD-123" not in message


def test_run_refuses_a_bad_database_url_in_one_line() -> None:
    """Row 4: a URL that does not parse is one line, without the password."""
    result = cdb("run", "--db", "postgresql+asyncpg://cdb:PASSWORD-123@h:notaport/db")
    assert result.returncode == 2
    message = one_line_error(result)
    assert "--db" in message
    assert "PASSWORD-123" not in message


def test_replay_numbers_beyond_int64_are_malformed_rows(tmp_path: Path) -> None:
    """Row 5: such a row is counted with its line; nothing trips, nothing overflows."""
    path = tmp_path / "BTCUSDT-trades-2024-01-01.csv"
    rows = [f"{i},42000.{i:02d}000000,0.01000000,420.0,{1704067200000 + i * 1000},False,True"
            for i in range(1, 60)]
    rows[30] = "99999999999999999999,42000.00000000,0.01,420.0,1704067230000,False,True"
    rows[40] = "41,99999999999999999999.00000000,0.01,420.0,1704067240000,False,True"
    path.write_text("\n".join(rows) + "\n")
    result = cdb("run", "--replay", str(path), "--quiet", "--json", "--db",
                 str(tmp_path / "cdb.db"))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["malformed_rows"] == 2
    assert any(e.startswith("31: trade id") and "out of range" in e
               for e in summary["first_errors"])
    assert any(e.startswith("41: price") and "out of range" in e
               for e in summary["first_errors"])
    ess = cdb("ess", "status", "--db", str(tmp_path / "cdb.db"), "--json")
    assert json.loads(ess.stdout)["state"] == "ACTIVE"


@pytest.mark.parametrize("text", ["[/]", "[blink red]loud[/]"])
def test_markup_in_user_text_is_printed_as_text(tmp_path: Path, text: str) -> None:
    """Row 6: a file path, a YAML value and a CSV cell with rich markup in them."""
    missing = tmp_path / f"no{text}such.csv"
    result = cdb("run", "--replay", str(missing))
    assert result.returncode == 2
    assert text in one_line_error(result)

    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "markup.yaml").write_text(f"title: 'title {text}'\n")
    listed = cdb("scenario", "list", "--dir", str(scenarios))
    assert listed.returncode == 0, listed.stderr
    assert f"title {text}" in listed.stdout

    csv = tmp_path / "BTCUSDT-trades-2024-01-01.csv"
    good = [f"{i},42000.00000000,0.01000000,420.0,{1704067200000 + i},False,True"
            for i in range(1, 5)]
    csv.write_text("\n".join([*good, f"9,{text},0.01,420.0,1704067300000,False,True"]) + "\n")
    run = cdb("run", "--replay", str(csv), "--quiet", "--db", str(tmp_path / "cdb.db"))
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert f"price {text!r}" in run.stdout.replace("\n", "")


@pytest.mark.parametrize(("name", "value"), [("RISK_MAX_POSITION", "inf"),
                                             ("ESS_COOLDOWN_S", "inf"),
                                             ("SIGNAL_THRESHOLD_PCT", "nan")])
def test_non_finite_settings_are_one_message(name: str, value: str) -> None:
    """Row 7: inf/nan settings stop the command, naming the setting."""
    result = cdb("run", "--duration", "1m", env={name: value})
    assert result.returncode == 2
    assert f"{name}: Input should be a finite number" in one_line_error(result)


def _zip(path: Path, flag_bits: int = 0, method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("BTCUSDT-trades-2024-01-01.csv",
                         "1,42000.00000000,0.01000000,420.0,1704067200000,False,True\n")
    data = bytearray(path.read_bytes())
    # Patch the flags and the method in the local header (offset 6, 8) and the
    # central directory entry (offset 8, 10 after its signature).
    central = data.rfind(b"PK\x01\x02")
    for at, base in ((6, 0), (8, central)):
        if flag_bits:
            data[base + at: base + at + 2] = flag_bits.to_bytes(2, "little")
        if method != zipfile.ZIP_DEFLATED:
            data[base + at + 2: base + at + 4] = method.to_bytes(2, "little")
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(("flags", "method", "expect"), [
    (0x1, zipfile.ZIP_DEFLATED, "is encrypted"),
    (0, 99, "compression method 99"),
])
def test_encrypted_or_unsupported_zip_is_one_line(tmp_path: Path, flags: int, method: int,
                                                  expect: str) -> None:
    """Row 7: an encrypted or unsupported-method zip."""
    path = _zip(tmp_path / "BTCUSDT-trades-2024-01-01.zip", flags, method)
    result = cdb("run", "--replay", str(path), "--db", str(tmp_path / "cdb.db"))
    assert result.returncode == 2
    message = one_line_error(result)
    assert expect in message
    assert len(message.splitlines()) == 1


def test_zip_bomb_is_refused_quickly(tmp_path: Path) -> None:
    """Bounded parsing: a member that expands thousands of times is refused unread."""
    path = tmp_path / "BTCUSDT-trades-2024-01-01.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("BTCUSDT-trades-2024-01-01.csv", b"1" * (200 * 1024 * 1024))
    result = cdb("run", "--replay", str(path), "--db", str(tmp_path / "cdb.db"))
    assert result.returncode == 2
    assert "expands" in one_line_error(result)


def test_status_with_a_port_that_is_not_a_number_is_one_line() -> None:
    """Row 7: ``cdb status --redis redis://h:notaport``."""
    result = cdb("status", "--redis", "redis://:pw-secret@h:notaport")
    assert result.returncode == 2
    message = one_line_error(result)
    assert "--redis" in message
    assert "port" in message
    assert "pw-secret" not in message


def test_replay_time_going_backwards_is_counted(tmp_path: Path) -> None:
    """Row 8: the market never runs backwards; the rows are counted and reported."""
    path = tmp_path / "BTCUSDT-trades-2024-01-01.csv"
    times = [1704067200000 + i * 1000 for i in range(20)]
    times[10] = 1600000000000  # years back
    path.write_text("".join(f"{i + 1},42000.00000000,0.01000000,420.0,{t},False,True\n"
                            for i, t in enumerate(times)))
    result = cdb("run", "--replay", str(path), "--quiet", "--json", "--db",
                 str(tmp_path / "cdb.db"))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["malformed_rows"] == 1
    assert "time goes backwards" in summary["first_errors"][0]
    assert summary["last_ts"] >= summary["first_ts"]


@pytest.mark.parametrize("name", ["prod_1", "PROD.1"])
def test_namespaces_that_would_share_a_schema_are_refused(name: str) -> None:
    """Row 10: prod-1 is allowed; prod_1 and PROD.1 would have shared its schema."""
    result = cdb("db", "upgrade", "--db", "postgresql+asyncpg://u@127.0.0.1:1/db",
                 env={"SERVICE_INSTANCE_NAME": name})
    assert result.returncode == 2
    assert "SERVICE_INSTANCE_NAME: use lowercase letters" in one_line_error(result)


def test_a_short_api_token_is_refused_at_start() -> None:
    """Row 11: ``CDB_API_TOKEN=x``."""
    result = cdb("ess", "trip", "--reason", "test", "--url", "http://127.0.0.1:1",
                 env={"CDB_API_TOKEN": "x"})
    assert result.returncode == 2
    message = one_line_error(result)
    assert "CDB_API_TOKEN: must be at least 16 characters" in message
    assert "'x'" not in message


def test_log_level_in_lower_case_is_accepted(tmp_path: Path) -> None:
    """Settings: LOG_LEVEL=info as the seeds write it."""
    result = cdb("run", "--duration", "1m", "--symbols", "BTCUSDT", "--quiet", "--json",
                 "--db", str(tmp_path / "cdb.db"), env={"LOG_LEVEL": "info"})
    assert result.returncode == 0, result.stderr
