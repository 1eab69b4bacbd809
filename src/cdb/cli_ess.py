"""``cdb ess status|trip|reset``: the emergency stop from the command line.

By default the commands talk to the risk service's API (``--url``, else
``$CDB_RISK_URL``, else the risk port on 127.0.0.1). The token for ``trip`` and
``reset`` is ``CDB_API_TOKEN`` (from its secret file or the environment, like every
secret), never a command-line argument that ``ps`` would show.

With ``--db`` they work on a database instead, with no service running: that is where
the embedded mode (``cdb run``) keeps the ESS between runs, so a run that ended HALTED
is inspected and reset there before the next run.

Exit codes: 0 done, 1 refused (cooldown, nothing to reset, bad request), 2 could not
ask (no service, no token, bad setting, a bad --url or --db: one line). Reasons, actors
and details are printed as text, URLs without their password.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cdb.errors import CdbError
from cdb.urls import check_url, database_url, redact_url

ess_app = typer.Typer(
    help="The emergency stop system (ESS): status, trip, reset.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)

UrlOption = Annotated[
    str | None,
    typer.Option("--url", envvar="CDB_RISK_URL",
                 help="Risk API, e.g. http://127.0.0.1:8002 (default: the risk port here)."),
]
DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Work on this database (embedded mode) instead of the API."),
]
ReasonOption = Annotated[str, typer.Option("--reason", "-r", help="Why (recorded).")]


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


ActorOption = Annotated[
    str, typer.Option("--actor", "-a", help="Who (recorded); default: your user name.")
]


def _settings() -> Any:
    from cdb.config import load_settings

    return load_settings()


def _url(url: str | None) -> str:
    if url:
        check_url("--url", url, ("http", "https"))
        return url.rstrip("/")
    return f"http://127.0.0.1:{_settings().port_of('risk')}"


def _token() -> str:
    token = _settings().cdb_api_token
    if token is None or not token.get_secret_value():
        raise CdbError(
            "no API token: set CDB_API_TOKEN (or CDB_API_TOKEN_FILE, or the secret file "
            "/run/secrets/cdb_api_token) to the risk service's token"
        )
    value: str = token.get_secret_value()
    return value


def _request(method: str, url: str, path: str, body: dict[str, str] | None = None,
             token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(timeout=10.0) as client:
            return client.request(method, url + path, json=body, headers=headers)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise CdbError(
            f"cannot reach the risk API at {redact_url(url)}: {redact_url(str(exc))}; is the "
            "risk service running? "
            "(point --url or CDB_RISK_URL at it, or use --db for an embedded run's database)"
        ) from None


def _answer(response: httpx.Response) -> dict[str, Any]:
    """The JSON of a successful answer; a refusal ends the command with its reason."""
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        body = {"detail": response.text[:300]}
    if response.is_success:
        return body
    detail = body.get("detail", body)
    if response.status_code in (401, 403):
        raise CdbError(f"the risk API refused: {detail}")
    if response.status_code >= 500:
        raise CdbError(f"the risk API failed ({response.status_code}): {detail}")
    err.print(f"[bold red]refused:[/] {escape(str(detail))}", highlight=False, soft_wrap=True)
    sys.exit(1)


def _when(ns: int) -> str:
    if not ns:
        return "-"
    try:
        return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="seconds")
    except (OverflowError, ValueError, OSError):  # a time no calendar holds
        return f"{ns} ns"


def _show(ess: dict[str, Any], json_out: bool) -> None:
    if json_out:
        sys.stdout.write(msgspec.json.encode(ess).decode() + "\n")
        return
    halted = ess.get("state") == "HALTED"
    # Reasons, details and actors are whatever someone typed: Text, never markup.
    table = Table(title="ESS", show_header=False, title_justify="left")
    table.add_row("state", Text(str(ess.get("state")),
                                style=f"bold {'red' if halted else 'green'}"))
    if ess.get("reason"):
        table.add_row("reason", Text(f"{ess['reason']}: {ess.get('detail', '')}"))
        table.add_row("by", Text(str(ess.get("actor", ""))))
    table.add_row("since", _when(int(ess.get("since_ns") or 0)))
    if halted and ess.get("cooldown_left_s") is not None:
        left = float(ess["cooldown_left_s"])
        table.add_row("reset", f"possible in {left:.0f} s" if left > 0 else "possible now")
    for trip in ess.get("trips", []):
        table.add_row("trip", Text(f"{_when(int(trip['ts']))}  {trip['reason']}: "
                                   f"{trip['detail']}"))
    console.print(table)


@ess_app.command()
def status(
    url: UrlOption = None, db: DbOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the ESS state, why and since when, and the cooldown left."""
    if db is not None:
        _show(asyncio.run(_db_status(db)), json_out)
        return
    _show(_answer(_request("GET", _url(url), "/ess")), json_out)


@ess_app.command()
def trip(
    reason: ReasonOption, actor: ActorOption = "", url: UrlOption = None, db: DbOption = None,
) -> None:
    """HALT trading now: no new order leaves risk except reducing ones."""
    who = actor or _default_actor()
    if db is not None:
        ess = asyncio.run(_db_change(db, "trip", who, reason))
    else:
        ess = _answer(_request("POST", _url(url), "/ess/trip",
                               {"actor": who, "reason": reason}, _token()))
        if not ess.get("changed", True):
            err.print("already HALTED; nothing changed")
    _show(ess, json_out=False)


@ess_app.command()
def reset(
    reason: ReasonOption, actor: ActorOption = "", url: UrlOption = None, db: DbOption = None,
) -> None:
    """Back to ACTIVE, after the cooldown; recorded with who and why."""
    who = actor or _default_actor()
    if db is not None:
        ess = asyncio.run(_db_change(db, "reset", who, reason))
    else:
        ess = _answer(_request("POST", _url(url), "/ess/reset",
                               {"actor": who, "reason": reason}, _token()))
    _show(ess, json_out=False)


# -- the embedded mode's database -----------------------------------------------------

def _db_url(db: str) -> str:
    return database_url("--db", db)


async def _db_status(db: str) -> dict[str, Any]:
    from cdb.clock import WallClock
    from cdb.risk.ess import EmergencyStop
    from cdb.risk.persistence import DatabaseEssStore
    from cdb.storage.store import Store, latest_run_id

    # An embedded database holds runs, each with its own ESS: the latest one is meant.
    async with Store(_db_url(db), run_id=await latest_run_id(_db_url(db))) as store:
        state = await DatabaseEssStore(store).load()
    machine = EmergencyStop(_settings().ess_config(), state)
    return _as_status(machine, WallClock().now())


def _as_status(machine: Any, now: int) -> dict[str, Any]:
    state = machine.state
    return {
        "state": state.state, "reason": state.reason, "detail": state.detail,
        "actor": state.actor, "since_ns": state.since_ns,
        "cooldown_left_s": machine.cooldown_left_ns(now) / 1e9,
    }


async def _db_change(db: str, action: str, actor: str, why: str) -> dict[str, Any]:
    from cdb.clock import WallClock
    from cdb.events import EssChange, IdGen
    from cdb.risk.ess import MANUAL, Alarm, EmergencyStop, EssState, ResetRefused
    from cdb.risk.persistence import DatabaseEssStore
    from cdb.storage.store import Store, latest_run_id

    if not actor.strip() or not why.strip():
        raise CdbError("--actor and --reason must not be empty")
    now = WallClock().now()
    async with Store(_db_url(db), run_id=await latest_run_id(_db_url(db))) as store:
        persisted = DatabaseEssStore(store)
        machine = EmergencyStop(_settings().ess_config(), await persisted.load())
        new: EssState | ResetRefused | None
        if action == "trip":
            new = machine.trip(now, Alarm(reason=MANUAL, detail=why.strip()), actor.strip())
            if new is None:
                err.print("already HALTED; nothing changed")
        else:
            new = machine.plan_reset(now, actor, why)
            if isinstance(new, ResetRefused):
                err.print(f"[bold red]refused:[/] {escape(new.detail)}", highlight=False)
                sys.exit(1)
            machine.apply(new)
        if new is not None:
            change_id = IdGen(f"cli-{actor.strip()}").next(now)
            await persisted.save(new, EssChange(
                id=change_id, ts=now, correlation_id=change_id, causation_id="", source="cli",
                state=new.state, reason=new.reason, actor=new.actor, detail=new.detail,
            ))
    return _as_status(machine, now)
