"""The console's web app without servers: pages from a snapshot, sign-in, CSRF, refusals
that say why, the token never shown, the gateway prefix, the chaos reports directory."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from cdb.bus.keys import Namespace
from cdb.console.app import Console, build_app
from cdb.console.auth import Sessions
from cdb.console.chaos import find_runs, report_file
from cdb.console.state import ChangeResult, Watcher
from cdb.console.views import DepView, EssView, InstanceView, Snapshot

TOKEN = "unit-console-token-0123456789"


class FakeWatcher(Watcher):
    """A watcher with a fixed snapshot that records the changes asked of it."""

    def __init__(self, *, refuse: ChangeResult | None = None) -> None:
        super().__init__(records=None, redis=None, namespace=Namespace(""), api_token=TOKEN)
        self.asked: list[tuple[str, str, str]] = []
        self.refuse = refuse
        self.snapshot = Snapshot(
            taken_at="2027-01-01 00:00:00.000", mode="distributed",
            instances=(InstanceView(service="ws", instance="ws-1", address="http://x",
                                    state="live", health="degraded", uptime_s=61.0,
                                    buffered=12, deps=(DepView(name="redis", status="down",
                                                               last_error="refused"),),
                                    note="redis: refused"),
                       InstanceView(service="risk", instance="risk-1", address="http://y",
                                    state="live", health="healthy")),
            ess=EssView(known=True, state="HALTED", reason="manual", actor="alice",
                        cooldown_s=300, cooldown_left_s=120.0))

    @property
    def changes_enabled(self) -> bool:
        return True

    async def refresh(self) -> Snapshot:
        return self.snapshot

    async def change(self, action: str, actor: str, reason: str) -> ChangeResult:
        self.asked.append((action, actor, reason))
        return self.refuse or ChangeResult(ok=True, message=f"{action} done")


def client(watcher: Watcher, *, open_reads: bool = True, reports: Path | None = None
           ) -> httpx.AsyncClient:
    console = Console(watcher, Sessions(TOKEN), reports or Path("/nonexistent"),
                      open_reads=open_reads)
    return httpx.AsyncClient(transport=httpx.ASGITransport(build_app(console)),
                             base_url="http://127.0.0.1")


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found[1]


async def signed_in(web: httpx.AsyncClient) -> str:
    """Sign ``web`` in; the CSRF token of its new session."""
    csrf = csrf_of((await web.get("/signin")).text)
    response = await web.post("/signin", data={"csrf": csrf, "token": TOKEN},
                              follow_redirects=False)
    assert response.status_code == 303
    return csrf_of((await web.get("/ess")).text)


async def test_the_overview_shows_instances_health_buffer_and_the_ess_banner() -> None:
    page = await client(FakeWatcher()).get("/")
    assert page.status_code == 200
    assert 'data-service="ws" data-health="degraded"' in page.text
    assert "redis down" in page.text
    assert "HALTED" in page.text
    assert "cooldown 120 s left" in page.text
    assert 'hx-get="/fragments/overview"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


async def test_the_session_cookie_is_httponly_and_samesite_strict() -> None:
    response = await client(FakeWatcher()).get("/")
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie


async def test_a_forged_post_without_csrf_is_refused_and_changes_nothing() -> None:
    watcher = FakeWatcher()
    web = client(watcher)
    await signed_in(web)
    response = await web.post("/ess/trip", data={"actor": "mallory", "reason": "x"})
    assert response.status_code == 403
    assert "CSRF" in response.text
    assert watcher.asked == []


async def test_without_sign_in_no_change_and_no_button() -> None:
    watcher = FakeWatcher()
    web = client(watcher)
    page = await web.get("/ess")
    assert 'id="trip-button"' not in page.text
    csrf = csrf_of((await web.get("/signin")).text)
    response = await web.post("/ess/trip", data={"csrf": csrf, "actor": "m", "reason": "x"})
    assert response.status_code == 403
    assert "sign in" in response.text
    assert watcher.asked == []


async def test_a_wrong_token_does_not_sign_in_and_the_token_is_never_rendered() -> None:
    web = client(FakeWatcher())
    csrf = csrf_of((await web.get("/signin")).text)
    wrong = await web.post("/signin", data={"csrf": csrf, "token": "guess"})
    assert wrong.status_code == 403
    assert "wrong token" in wrong.text
    csrf = await signed_in(web)
    for path in ("/", "/ess", "/book", "/chaos", "/fragments/overview"):
        assert TOKEN not in (await web.get(path)).text


async def test_sign_in_gives_a_new_session_id() -> None:
    web = client(FakeWatcher())
    await web.get("/signin")
    before = web.cookies.get("cdb_console")
    await signed_in(web)
    assert web.cookies.get("cdb_console") != before


async def test_a_signed_in_trip_goes_to_risk_with_who_and_why() -> None:
    watcher = FakeWatcher()
    web = client(watcher)
    csrf = await signed_in(web)
    response = await web.post("/ess/trip", data={"csrf": csrf, "actor": "alice", "reason": "drill"})
    assert response.status_code == 200
    assert watcher.asked == [("trip", "alice", "drill")]
    assert "trip done" in response.text


async def test_a_change_without_who_or_why_is_refused() -> None:
    watcher = FakeWatcher()
    web = client(watcher)
    csrf = await signed_in(web)
    response = await web.post("/ess/reset", data={"csrf": csrf, "actor": " ", "reason": "x"})
    assert response.status_code == 400
    assert "who you are and why" in response.text
    assert watcher.asked == []


async def test_a_reset_refused_by_risk_says_why_and_the_time_left() -> None:
    refusal = ChangeResult(ok=False, message="cooldown: reset possible in 120 s",
                           retry_after_s=120.0)
    web = client(FakeWatcher(refuse=refusal))
    csrf = await signed_in(web)
    response = await web.post("/ess/reset", data={"csrf": csrf, "actor": "bob", "reason": "early"})
    assert response.status_code == 409
    assert "cooldown: reset possible in 120 s" in response.text
    assert "time left: 120 s" in response.text


async def test_the_reset_button_is_disabled_during_the_cooldown() -> None:
    web = client(FakeWatcher())
    await signed_in(web)
    button = (await web.get("/fragments/reset-button")).text
    assert "disabled" in button
    assert "120 s left" in button


async def test_off_loopback_every_page_needs_sign_in() -> None:
    web = client(FakeWatcher(), open_reads=False)
    response = await web.get("/", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/signin"
    await signed_in(web)
    assert (await web.get("/")).status_code == 200


async def test_links_follow_the_gateway_prefix_and_ignore_a_hostile_one() -> None:
    web = client(FakeWatcher())
    page = (await web.get("/", headers={"X-Forwarded-Prefix": "/console"})).text
    assert 'href="/console/ess"' in page
    assert 'src="/console/vendor/htmx/htmx.min.js"' in page
    hostile = (await web.get("/", headers={"X-Forwarded-Prefix": '"><script>'})).text
    assert "<script>" not in hostile.replace('<script src="/vendor/htmx/htmx.min.js">', "")


async def test_htmx_and_its_license_are_served_from_the_package() -> None:
    web = client(FakeWatcher())
    script = await web.get("/vendor/htmx/htmx.min.js")
    assert script.status_code == 200
    assert "htmx" in script.text[:2000]
    assert (await web.get("/vendor/htmx/LICENSE")).status_code == 200


def write_run(root: Path, name: str, verdict: str, html: bool = True) -> None:
    run = root / name
    run.mkdir(parents=True)
    (run / "journal.json").write_text(json.dumps({
        "experiment": {"title": f"title {name}"}, "duration": 3.0,
        "cdb": {"verdict": verdict, "reasons": ["r1"],
                "assertions": [{"name": "no_dup", "status": verdict}]}}))
    if html:
        (run / "report.html").write_text("<html>report</html>")


async def test_chaos_runs_are_found_with_verdict_and_report(tmp_path: Path) -> None:
    write_run(tmp_path, "a/1", "passed")
    write_run(tmp_path, "b/2", "failed", html=False)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "journal.json").write_text("not json")
    runs = {r.name: r for r in find_runs(tmp_path)}
    assert set(runs) == {"a/1", "b/2"}
    assert runs["a/1"].verdict == "passed"
    assert runs["a/1"].html == "a/1/report.html"
    assert runs["b/2"].html == ""
    assert runs["b/2"].assertions == (("no_dup", "failed"),)
    page = (await client(FakeWatcher(), reports=tmp_path).get("/chaos")).text
    assert "title a/1" in page
    assert 'href="/chaos/report/a/1/report.html"' in page


@pytest.mark.parametrize("name", ["../secret/report.html", "a/1/journal.json",
                                  "/etc/passwd", "a/../../report.html"])
async def test_no_file_outside_the_reports_is_served(tmp_path: Path, name: str) -> None:
    reports = tmp_path / "reports"
    write_run(reports, "a/1", "passed")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "report.html").write_text("secret")
    assert report_file(reports, name) is None
    web = client(FakeWatcher(), reports=reports)
    assert (await web.get("/chaos/report/a/1/report.html")).text == "<html>report</html>"
