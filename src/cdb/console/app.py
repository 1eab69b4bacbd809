"""The console's web app: server-rendered pages (Jinja2), live by htmx polling.

Each page has a fragment route (``/fragments/...``) that htmx polls; the fragment is
rendered from the watcher's last snapshot, so polling costs the pipeline nothing.
Changes are POSTed forms: each needs a signed-in session and the session's CSRF token;
a refused change answers 403 (not signed in, bad CSRF) or 409 (risk refused it) with
a page that says why.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import msgspec
from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from cdb import __version__
from cdb.console.auth import COOKIE, Session, Sessions, csrf_ok
from cdb.console.chaos import find_runs, report_file
from cdb.console.state import ChangeResult, Watcher, why_text

HERE = Path(__file__).parent
VENDOR = HERE.parent / "web" / "vendor"
MAX_FORM_BYTES = 16 * 1024
MAX_TEXT = 500
_PREFIX = re.compile(r"^(/[A-Za-z0-9_-]+)*$")
_HEADERS = {
    # No inline script or style: what an instance or a database row says is text.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


_RUN_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
_REPORT_HEADERS = {
    # A report is a self-contained page of its own (inline script and style): it runs
    # sandboxed, without the console's origin.
    "Content-Security-Policy": "sandbox allow-scripts",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}




def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Console:
    """The app's state: the watcher, the sessions, where the chaos reports are."""

    def __init__(self, watcher: Watcher, sessions: Sessions, reports: Path, *,
                 open_reads: bool = True) -> None:
        self.watcher = watcher
        self.sessions = sessions
        self.reports = reports
        self.open_reads = open_reads
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"),
                               autoescape=select_autoescape(default=True), auto_reload=False)
        self.env.filters["duration"] = _duration

    def session(self, request: Request) -> tuple[Session, bool]:
        """The browser's session, and whether it is new (its cookie must be set)."""
        found = self.sessions.get(request.cookies.get(COOKIE))
        return (found, False) if found is not None else (self.sessions.new(), True)

    def render(self, request: Request, template: str, session: Session, *, status: int = 200,
               fresh: bool = False, **context: Any) -> HTMLResponse:
        prefix = request.headers.get("x-forwarded-prefix", "")
        html = self.env.get_template(template).render(
            prefix=prefix if _PREFIX.match(prefix) else "", session=session,
            signed_in=session.signed_in, sign_in_possible=self.sessions.sign_in_possible,
            changes_enabled=self.watcher.changes_enabled, snap=self.watcher.snapshot,
            version=__version__, **context)
        response = HTMLResponse(html, status, headers=_HEADERS)
        if fresh:
            set_cookie(response, request, session)
        return response


def set_cookie(response: Response, request: Request, session: Session) -> None:
    response.set_cookie(COOKIE, session.id, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https"
                        or request.headers.get("x-forwarded-proto") == "https")


async def read_form(request: Request) -> dict[str, str] | None:
    """The urlencoded form of ``request`` (one value per name), None when too big."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    parsed = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=20)
    return {k: v[0] for k, v in parsed.items()}


def build_app(console: Console) -> FastAPI:
    """The FastAPI app of ``console`` (its watcher is started by the caller)."""
    app = FastAPI(title="cdb console", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.mount("/vendor", StaticFiles(directory=VENDOR), name="vendor")
    _live_routes(app, console)
    _other_routes(app, console)
    _run_routes(app, console)
    _chaos_routes(app, console)
    _auth_routes(app, console)
    return app


def _page(console: Console, request: Request, template: str, **context: Any) -> Response:
    session, fresh = console.session(request)
    if not console.open_reads and not session.signed_in:
        return RedirectResponse(_prefix(request) + "/signin", 303)
    return console.render(request, template, session, fresh=fresh, **context)


def _live_routes(app: FastAPI, console: Console) -> None:
    watcher = console.watcher

    def page(request: Request, template: str, **context: Any) -> Response:
        return _page(console, request, template, **context)

    @app.get("/health")
    async def health() -> JSONResponse:
        snap = watcher.snapshot
        return JSONResponse({"service": "console", "version": __version__,
                             "status": "healthy", "mode": snap.mode,
                             "pipeline": snap.summary, "problems": list(snap.problems)})

    @app.get("/")
    async def overview(request: Request) -> Response:
        return page(request, "overview.html", page="overview")

    @app.get("/fragments/overview")
    async def overview_fragment(request: Request) -> Response:
        return page(request, "_overview.html")

    @app.get("/ess")
    async def ess(request: Request) -> Response:
        history, problem = await watcher.history()
        return page(request, "ess.html", page="ess", history=history, problem=problem)

    @app.get("/fragments/ess")
    async def ess_fragment(request: Request) -> Response:
        history, problem = await watcher.history()
        return page(request, "_ess.html", history=history, problem=problem)

    @app.get("/fragments/reset-button")
    async def reset_button(request: Request) -> Response:
        return page(request, "_reset_button.html")


def _other_routes(app: FastAPI, console: Console) -> None:
    watcher = console.watcher

    def page(request: Request, template: str, **context: Any) -> Response:
        return _page(console, request, template, **context)

    @app.post("/ess/trip")
    async def trip(request: Request) -> Response:
        return await change(console, request, "trip")

    @app.post("/ess/reset")
    async def reset(request: Request) -> Response:
        return await change(console, request, "reset")

    @app.get("/book")
    async def book(request: Request) -> Response:
        return page(request, "book.html", page="book", book=await watcher.book())

    @app.get("/fragments/book")
    async def book_fragment(request: Request) -> Response:
        return page(request, "_book.html", book=await watcher.book())

    @app.get("/trace/{event_id}")
    async def trace(request: Request, event_id: str) -> Response:
        steps, problem = await watcher.chain(event_id[:200])
        return page(request, "trace.html", page="book", event_id=event_id[:200], steps=steps,
                    problem=problem)


def _chaos_routes(app: FastAPI, console: Console) -> None:
    """Scenario runs found in the reports directory, and their HTML reports."""

    @app.get("/chaos")
    async def chaos(request: Request) -> Response:
        return _page(console, request, "chaos.html", page="chaos",
                     runs=find_runs(console.reports),
                     reports=str(console.reports))

    @app.get("/chaos/report/{name:path}")
    async def chaos_report(request: Request, name: str) -> Response:
        session, _ = console.session(request)
        if not console.open_reads and not session.signed_in:
            return RedirectResponse(_prefix(request) + "/signin", 303)
        path = report_file(console.reports, name)
        if path is None:
            return Response("no such report", 404, media_type="text/plain")
        # The report is a self-contained page of its own (inline script and style).
        return FileResponse(path, media_type="text/html", headers=_REPORT_HEADERS)


def _run_routes(app: FastAPI, console: Console) -> None:
    """The equity curve (data for the book's chart) and the recorded runs."""
    watcher = console.watcher

    def page(request: Request, template: str, **context: Any) -> Response:
        return _page(console, request, template, **context)

    @app.get("/data/equity")
    async def equity(request: Request) -> Response:
        session, _ = console.session(request)
        if not console.open_reads and not session.signed_in:
            return JSONResponse({"detail": "sign in first"}, 403, headers=_HEADERS)
        view, problem = await watcher.equity()
        body = msgspec.json.encode({"x": view.x, "equity": view.equity,
                                    "drawdown_pct": view.drawdown_pct,
                                    "source": view.source, "problem": problem})
        return Response(body, media_type="application/json", headers=_HEADERS)

    @app.get("/runs")
    async def runs(request: Request) -> Response:
        found, problem = await watcher.runs()
        return page(request, "runs.html", page="runs", runs=found, problem=problem)

    @app.get("/runs/{run_id}/report")
    async def run_report(request: Request, run_id: str) -> Response:
        session, _ = console.session(request)
        if not console.open_reads and not session.signed_in:
            return RedirectResponse(_prefix(request) + "/signin", 303)
        text = None
        if watcher.records is not None and _RUN_ID.match(run_id):
            try:
                text = await watcher.records.report(run_id)
            except Exception as exc:  # a broken run must not break the console
                return Response(f"the report could not be made: {why_text(exc)}", 500,
                                media_type="text/plain")
        if text is None:
            return Response("no such run", 404, media_type="text/plain")
        return HTMLResponse(text, headers=_REPORT_HEADERS)


def _auth_routes(app: FastAPI, console: Console) -> None:
    @app.get("/signin")
    async def signin_page(request: Request) -> Response:
        session, fresh = console.session(request)
        return console.render(request, "signin.html", session, fresh=fresh, page="signin")

    @app.post("/signin")
    async def signin(request: Request) -> Response:
        session, fresh = console.session(request)
        form = await read_form(request) or {}
        message = ""
        if not csrf_ok(session, form.get("csrf", "")):
            message = "refused: the form's CSRF token is missing or wrong (reload the page)"
        elif not console.sessions.sign_in_possible:
            message = "sign-in is disabled: the console has no CDB_API_TOKEN configured"
        else:
            signed = console.sessions.sign_in(session, form.get("token", ""))
            if signed is not None:
                response = RedirectResponse(_prefix(request) + "/ess", 303, headers=_HEADERS)
                set_cookie(response, request, signed)
                return response
            message = "wrong token"
        return console.render(request, "signin.html", session, status=403, fresh=fresh,
                              page="signin", message=message)

    @app.post("/signout")
    async def signout(request: Request) -> Response:
        session = console.sessions.get(request.cookies.get(COOKIE))
        form = await read_form(request) or {}
        if session is not None and csrf_ok(session, form.get("csrf", "")):
            console.sessions.sign_out(session)
        response = RedirectResponse(_prefix(request) + "/", 303, headers=_HEADERS)
        response.delete_cookie(COOKIE, path="/")
        return response


async def change(console: Console, request: Request, action: str) -> Response:
    """A trip or reset from a form: signed in, CSRF checked, who and why given."""
    watcher = console.watcher
    session = console.sessions.get(request.cookies.get(COOKIE))
    form = await read_form(request)
    result: ChangeResult
    status = 403
    if form is None:
        result, status = ChangeResult(ok=False, message="form too large"), 413
    elif not csrf_ok(session, form.get("csrf", "")):
        result = ChangeResult(ok=False, message="refused: the form's CSRF token is missing "
                              "or wrong (reload the page and try again)")
    elif session is None or not session.signed_in:
        result = ChangeResult(ok=False, message="refused: sign in with the API token first")
    else:
        actor = form.get("actor", "").strip()[:MAX_TEXT]
        reason = form.get("reason", "").strip()[:MAX_TEXT]
        if not actor or not reason:
            result, status = ChangeResult(
                ok=False, message="refused: say who you are and why"), 400
        else:
            result = await watcher.change(action, actor, reason)
            status = 200 if result.ok else 409
            await watcher.refresh()
    history, problem = await watcher.history()
    shown, fresh = (session, False) if session is not None else console.session(request)
    return console.render(request, "ess.html", shown, status=status, fresh=fresh,
                          page="ess", history=history, problem=problem, result=result)


def _prefix(request: Request) -> str:
    prefix = request.headers.get("x-forwarded-prefix", "")
    return prefix if _PREFIX.match(prefix) else ""
