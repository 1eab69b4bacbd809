"""The operator console in a real headless Chromium against a real ``cdb up`` pipeline.

One pipeline (Redis, PostgreSQL, ``cdb up``) and one ``cdb console`` process serve the
whole module; the tests run in order: what an anonymous browser can and cannot do,
the overview, the kill switch driven from the page (sign in, trip, reset refused in the
cooldown and accepted after), an order's audit chain, the chaos page, and last a Redis
outage seen live. Screenshots of every page are kept (``$CDB_TEST_ARTIFACTS``).

The ESS cooldown is 8 s here (the product's default is 300 s) so that the test can
both see a reset refused within it and accepted after it without waiting minutes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from cdb.bus.keys import MARKET_DATA, SIGNALS, Namespace
from cdb.bus.redis_streams import RedisStreamsBus
from cdb.events import SCALE, AnyEvent, Signal, Trade
from cdb.testing.cluster import REDIS_PASSWORD, LocalPipeline
from cdb.testing.ports import restartable_port
from cdb.testing.waiting import eventually
from tests.browser import Browser, artifact_dir

pytestmark = pytest.mark.timeout(600)

TOKEN = "e2e-console-token-0123456789"
COOLDOWN_S = 8
ENV = {
    "CDB_API_TOKEN": TOKEN,
    "ESS_COOLDOWN_S": str(COOLDOWN_S),
    # The synthetic market must neither trade nor trip the ESS: the tests do both.
    "SIGNAL_THRESHOLD_PCT": "90",
    "ESS_STALE_DATA_S": "0",
    "RISK_INITIAL_CASH": "100000",
    "RISK_MAX_POSITION": "1000000",
    "RISK_MAX_EXPOSURE": "10000000",
}
S = 1_000_000_000


class Console:
    """A ``cdb console`` process on a free port, for the module's pipeline."""

    def __init__(self, pipe: LocalPipeline | None, reports: Path, *, db: Path | None = None,
                 workdir: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.port = restartable_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if pipe is not None:
            source = ["--redis", f"redis://:{REDIS_PASSWORD}@127.0.0.1:{pipe.redis.port}/0",
                      "--postgres", pipe.postgres_url]
            workdir, env = pipe.workdir, pipe.env
        else:  # embedded: the database of a `cdb run`
            assert db is not None
            assert workdir is not None
            source = ["--db", str(db)]
        log = (workdir / "console.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cdb", "console", *source, "--port", str(self.port),
             "--reports", str(reports)],
            env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        eventually(self._up, 30, "console answering")

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"cdb console exited {self.process.returncode}")
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPipeline]:
    with LocalPipeline(tmp_path_factory.mktemp("console"), env=ENV) as pipeline:
        pipeline.start()
        yield pipeline


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reports directory with one finished scenario run in it."""
    root = tmp_path_factory.mktemp("reports")
    run = root / "redis-blip" / "abc123"
    run.mkdir(parents=True)
    (run / "journal.json").write_text(json.dumps({
        "experiment": {"title": "Redis blip"}, "start": "2026-01-01T00:00:00Z",
        "duration": 42.5, "status": "completed",
        "cdb": {"verdict": "passed", "mode": "distributed", "reasons": [],
                "assertions": [{"name": "no_lost_orders", "status": "passed"}]}}))
    (run / "report.html").write_text("<html><body><h1 id='report'>Redis blip</h1></body></html>")
    return root


@pytest.fixture(scope="module")
def console(pipe: LocalPipeline, reports: Path) -> Iterator[Console]:
    app = Console(pipe, reports)
    yield app
    app.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module; screenshots in ``artifact_dir("console")``
    ($CDB_TEST_ARTIFACTS/console; their paths are printed)."""
    session = Browser(artifact_dir("console"))
    try:
        yield session
        # The refused reset is a 409 on purpose; anything else is a broken page.
        errors = [e for e in session.console_errors() if "(Conflict)" not in e]
        assert errors == [], "JavaScript errors or refused loads"
    finally:
        session.close()


@pytest.fixture(scope="module")
def driver(browser: Browser) -> WebDriver:
    web: WebDriver = browser.driver
    _browsers[id(web)] = browser
    return web


_browsers: dict[int, Browser] = {}


def shot(driver: WebDriver, name: str) -> None:
    Browser.screenshot(_browsers[id(driver)], name)


# Read in one script: htmx replaces the live parts every second, so an element found
# by one WebDriver call may be gone (stale) by the next.
def text_of(driver: WebDriver, css: str) -> str:
    text = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", css)
    return str(text)


def healths(driver: WebDriver) -> dict[str, str]:
    found = driver.execute_script(
        "return [...document.querySelectorAll('#instances tbody tr[data-service]')]"
        ".map(r => [r.dataset.service, r.dataset.health])")
    return {str(k): str(v) for k, v in found}


def reset_enabled(driver: WebDriver) -> bool:
    return bool(driver.execute_script(
        "const b = document.getElementById('reset-button'); return b !== null && !b.disabled"))


def ess(pipe: LocalPipeline) -> dict[str, Any]:
    state: dict[str, Any] = pipe.get("risk", "/ess")
    return state


def test_overview_lists_five_healthy_services(pipe: LocalPipeline, console: Console,
                                              driver: WebDriver) -> None:
    driver.get(console.url + "/")
    eventually(lambda: healths(driver) == dict.fromkeys(
        ("db_writer", "execution", "risk", "signal", "ws"), "healthy"), 15,
        "five healthy services on the page")
    assert "ACTIVE" in text_of(driver, "#ess-banner")
    assert text_of(driver, "#pipeline-status") == "healthy"
    eventually(lambda: "stream.market_data" in text_of(driver, "#lags"), 10,
               "consumer lag per stream and group")
    shot(driver, "overview")


def test_without_sign_in_no_change_is_possible(pipe: LocalPipeline, console: Console,
                                               driver: WebDriver) -> None:
    """No trip button for an anonymous browser; a forged post (no CSRF token, or a
    session that never signed in) is refused with the reason, and nothing changes."""
    driver.get(console.url + "/ess")
    assert not driver.find_elements(By.ID, "trip-button")
    assert driver.find_elements(By.ID, "signin-needed")
    shot(driver, "killswitch-anonymous")
    forged = httpx.post(f"{console.url}/ess/trip", data={"actor": "mallory", "reason": "x"})
    assert forged.status_code == 403
    assert "CSRF" in forged.text
    with httpx.Client(base_url=console.url) as anon:
        page = anon.get("/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None  # this browser's own CSRF token, but it never signed in
        refused = anon.post("/ess/trip", data={"csrf": csrf[1], "actor": "m", "reason": "x"})
        assert refused.status_code == 403
        assert "sign in" in refused.text
        wrong = anon.post("/signin", data={"csrf": csrf[1], "token": "not-the-token"})
        assert wrong.status_code == 403
        assert "wrong token" in wrong.text
        assert TOKEN not in page.text + refused.text + wrong.text
    assert ess(pipe)["state"] == "ACTIVE"


def sign_in(driver: WebDriver, console: Console) -> None:
    driver.get(console.url + "/signin")
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.ID, "signin-button").click()
    eventually(lambda: bool(driver.find_elements(By.ID, "trip-button")), 10, "signed in")
    cookie = driver.get_cookie("cdb_console")
    assert cookie is not None
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    assert TOKEN not in driver.page_source


def test_trip_from_the_page_halts_risk_with_the_actor(pipe: LocalPipeline, console: Console,
                                                      driver: WebDriver) -> None:
    sign_in(driver, console)
    driver.find_element(By.ID, "trip-actor").send_keys("alice")
    driver.find_element(By.ID, "trip-reason").send_keys("drill from the console")
    driver.find_element(By.ID, "trip-button").click()
    eventually(lambda: "HALTED" in text_of(driver, "#result"), 10, "trip confirmed")
    state = ess(pipe)
    assert state["state"] == "HALTED"
    assert state["actor"] == "alice"
    assert state["detail"] == "drill from the console" or "drill" in json.dumps(state)
    eventually(lambda: "HALTED" in text_of(driver, "#ess-banner"), 5, "banner HALTED")
    shot(driver, "killswitch-halted")


def test_reset_refused_in_the_cooldown_then_accepted(pipe: LocalPipeline, console: Console,
                                                     driver: WebDriver) -> None:
    assert ess(pipe)["state"] == "HALTED"
    assert not reset_enabled(driver)
    assert "left" in text_of(driver, "#reset-button")
    # Submitted anyway (the button is only a hint): risk refuses and the page says why.
    driver.find_element(By.ID, "reset-actor").send_keys("bob")
    driver.find_element(By.ID, "reset-reason").send_keys("too early")
    driver.execute_script("document.getElementById('reset-form').submit()")
    eventually(lambda: "time left" in text_of(driver, "#result"), 10, "refusal shown")
    assert "cooldown" in text_of(driver, "#result").lower()
    assert ess(pipe)["state"] == "HALTED"
    shot(driver, "killswitch-reset-refused")
    # The button comes alive by itself once the cooldown is over (no reload).
    eventually(lambda: reset_enabled(driver), COOLDOWN_S + 10,
               "reset enabled after the cooldown")
    driver.find_element(By.ID, "reset-actor").clear()
    driver.find_element(By.ID, "reset-actor").send_keys("bob")
    driver.find_element(By.ID, "reset-reason").send_keys("drill over")
    driver.execute_script("document.getElementById('reset-button').click()")
    eventually(lambda: "ACTIVE" in text_of(driver, "#result"), 10, "reset confirmed")
    state = ess(pipe)
    assert state["state"] == "ACTIVE"
    eventually(lambda: "bob" in text_of(driver, "#history"), 10, "reset in the history")
    assert "alice" in text_of(driver, "#history")
    shot(driver, "killswitch-history")


def publish(pipe: LocalPipeline, topic: str, events: list[AnyEvent]) -> None:
    async def go() -> None:
        client = aioredis.Redis(host="127.0.0.1", port=pipe.redis.port, password=REDIS_PASSWORD)
        bus = RedisStreamsBus(client, Namespace(pipe.namespace), owns_client=True)
        try:
            await bus.publish(topic, events)
        finally:
            await bus.close()

    asyncio.run(go())


def test_an_order_id_opens_its_chain(pipe: LocalPipeline, console: Console,
                                     driver: WebDriver) -> None:
    run = uuid.uuid4().hex[:6]
    now = time.time_ns()
    trade_id = f"e2e:CONSOLEUSDT:{run}"
    trade = Trade(id=trade_id, ts=now, correlation_id=trade_id, causation_id=trade_id,
                  source="e2e", venue="e2e", symbol="CONSOLEUSDT", trade_id=1,
                  price_e8=100 * SCALE, qty_e8=100 * SCALE)
    publish(pipe, MARKET_DATA, [trade])
    signal = Signal(id=f"e2e-sig-{run}", ts=now + S // 10, correlation_id=trade.id,
                    causation_id=trade.id, source="e2e", strategy_id="e2e",
                    symbol="CONSOLEUSDT", side="BUY", price_e8=100 * SCALE, trade_id=1,
                    move_bp=500, volume_e8=10**6 * SCALE)
    publish(pipe, SIGNALS, [signal])
    driver.get(console.url + "/book")
    eventually(lambda: bool(driver.find_elements(By.CSS_SELECTOR, "#orders a.order-id")), 30,
               "an order on the book page (live)")
    shot(driver, "book")
    link = driver.find_element(By.CSS_SELECTOR, "#orders a.order-id")
    order_id = link.text
    link.click()
    eventually(lambda: text_of(driver, "#trace-id") == order_id, 10, "trace page")
    kinds = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#chain td.kind")]
    assert {"trade", "signal", "order"} <= set(kinds), kinds
    assert kinds.index("signal") < kinds.index("order")
    shot(driver, "chain")


def test_chaos_page_lists_runs_with_verdict_and_report(console: Console,
                                                       driver: WebDriver) -> None:
    driver.get(console.url + "/chaos")
    assert "Redis blip" in text_of(driver, "#runs")
    assert "passed" in text_of(driver, "#runs")
    shot(driver, "chaos")
    driver.find_element(By.LINK_TEXT, "report").click()
    eventually(lambda: bool(driver.find_elements(By.ID, "report")), 10, "report opened")
    assert httpx.get(f"{console.url}/chaos/report/../../etc/passwd").status_code == 404


def test_the_book_draws_the_equity_curve(console: Console, driver: WebDriver) -> None:
    """The chart script (vendored uPlot, no inline script) loads the curve of the
    recorded fills; once there is a fill, both curves are drawn."""
    driver.get(console.url + "/book")
    eventually(lambda: driver.execute_script(
        "return document.getElementById('equity').dataset.points") is not None, 15,
        "the curve loaded")
    if driver.find_elements(By.CSS_SELECTOR, "#fills a"):
        eventually(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#equity canvas")) == 2,
                   15, "equity and drawdown drawn")
        assert "recorded fills" in text_of(driver, "#equity-note")
    shot(driver, "book-equity")


def test_a_restarted_service_shows_its_restart_count(pipe: LocalPipeline, console: Console,
                                                     driver: WebDriver) -> None:
    """cdb up restarts a killed service; the new process advertises restarts 1 and the
    overview shows it (live, no reload)."""
    driver.get(console.url + "/")

    def restarts() -> dict[str, str]:
        found = driver.execute_script(
            "return [...document.querySelectorAll('#instances tbody tr[data-service]')]"
            ".map(r => [r.dataset.service, r.querySelector('td.restarts').innerText])")
        return {str(k): str(v) for k, v in found}

    eventually(lambda: restarts().get("signal") == "0", 15, "signal never restarted")
    pipe.kill("signal")
    eventually(lambda: restarts().get("signal") == "1" and healths(driver).get("signal")
               == "healthy", 60, "signal restarted once, healthy")
    assert restarts()["ws"] == "0"
    shot(driver, "overview-restarted")


def test_postgres_outage_shows_live_and_recovers(pipe: LocalPipeline, console: Console,
                                                 driver: WebDriver) -> None:
    driver.get(console.url + "/")
    eventually(lambda: text_of(driver, "#pipeline-status") == "healthy", 30, "healthy first")
    driver.execute_script("window.notReloaded = true")
    pipe.postgres.stop()
    try:
        eventually(lambda: "database" in text_of(driver, "#live").lower()
                   and healths(driver).get("db_writer") != "healthy", 15,
                   "the page shows PostgreSQL down (console's reads and db_writer)")
        assert set(healths(driver)) == {"db_writer", "execution", "risk", "signal", "ws"}
        assert driver.execute_script("return window.notReloaded") is True
        shot(driver, "overview-postgres-down")
        driver.get(console.url + "/book")  # still served: the database part says why
        eventually(lambda: "database" in text_of(driver, "#live").lower(), 15,
                   "the book says the database is unreachable")
        shot(driver, "book-postgres-down")
    finally:
        pipe.postgres.start()
    driver.get(console.url + "/")
    eventually(lambda: text_of(driver, "#pipeline-status") == "healthy"
               and "database" not in text_of(driver, "#live").lower(), 60,
               "healthy again after PostgreSQL came back")
    shot(driver, "overview-postgres-recovered")


def test_a_slow_client_does_not_slow_the_pipeline(pipe: LocalPipeline, console: Console,
                                                  driver: WebDriver) -> None:
    """Clients that ask for the live fragments and never read the answers: the watcher
    (one, shared) keeps refreshing, other browsers keep their live page and the
    pipeline keeps its pace."""
    key = "signal:stream.market_data"

    def rate(seconds: float) -> float:
        before, started = pipe.progress().get(key, 0.0), time.monotonic()
        time.sleep(seconds)
        return (pipe.progress().get(key, 0.0) - before) / (time.monotonic() - started)

    quiet = rate(5)
    stuck = []
    request = (f"GET /fragments/book HTTP/1.1\r\nHost: 127.0.0.1:{console.port}\r\n\r\n"
               f"GET /fragments/overview HTTP/1.1\r\nHost: 127.0.0.1:{console.port}\r\n\r\n"
               ).encode() * 100
    try:
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", console.port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(request)  # and never read
            stuck.append(sock)
        driver.get(console.url + "/")
        taken = driver.execute_script("return document.getElementById('live').innerText")
        loaded = rate(5)
        eventually(lambda: driver.execute_script(
            "return document.getElementById('live').innerText") != taken, 10,
            "the open page still updates")
        started = time.monotonic()
        assert httpx.get(f"{console.url}/health", timeout=5).status_code == 200
        answered = time.monotonic() - started
    finally:
        for sock in stuck:
            sock.close()
    print(f"market data into signal: {quiet:.1f}/s alone, {loaded:.1f}/s with 20 stuck "
          f"clients; console /health in {answered * 1000:.0f} ms")
    assert answered < 2.0
    if quiet > 5:  # a paced market: the pipeline keeps it whatever the clients do
        assert loaded > 0.7 * quiet


def test_redis_outage_shows_live_and_recovers(pipe: LocalPipeline, console: Console,
                                              driver: WebDriver) -> None:
    driver.get(console.url + "/")
    eventually(lambda: text_of(driver, "#pipeline-status") == "healthy", 15, "healthy first")
    driver.execute_script("window.notReloaded = true")
    pipe.redis.stop()
    try:
        started = time.monotonic()
        eventually(lambda: text_of(driver, "#pipeline-status") in ("degraded", "unhealthy"),
                   5, "the page shows the outage within 5 s")
        seen = time.monotonic() - started
        eventually(lambda: healths(driver).get("ws") == "degraded", 5, "ws degraded")
        assert "redis" in driver.find_element(By.ID, "live").text.lower()
        assert driver.execute_script("return window.notReloaded") is True
        shot(driver, "overview-redis-down")
    finally:
        pipe.redis.start()
    eventually(lambda: text_of(driver, "#pipeline-status") == "healthy", 60,
               "healthy again after Redis came back")
    assert driver.execute_script("return window.notReloaded") is True
    shot(driver, "overview-recovered")
    print(f"outage shown {seen:.1f} s after Redis stopped")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory, reports: Path) -> Iterator[Console]:
    """``cdb console --db`` on the database of a finished ``cdb run``."""
    work = tmp_path_factory.mktemp("embedded")
    db = work / "run.db"
    done = subprocess.run(
        [sys.executable, "-m", "cdb", "run", "--duration", "1h", "--db", str(db), "--quiet"],
        cwd=work, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    app = Console(None, reports, db=db, workdir=work,
                  env={k: v for k, v in ENV.items() if k.startswith("RISK_")} | {
                      "PATH": os.environ.get("PATH", ""), "HOME": str(work),
                      "CDB_API_TOKEN": TOKEN})
    yield app
    app.stop()


def test_embedded_pages_render_and_offer_no_change(embedded: Console, driver: WebDriver
                                                   ) -> None:
    """A finished run's database: the pages render, the run and its report are listed,
    the equity curve is drawn from the run's series, and no change is possible."""
    driver.get(embedded.url + "/")
    assert "embedded" in text_of(driver, "#instances")
    shot(driver, "embedded-overview")
    driver.get(embedded.url + "/runs")
    run_id = text_of(driver, "#runs td.run-id")
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", run_id), run_id
    assert "synthetic" in text_of(driver, "#runs")
    shot(driver, "embedded-runs")
    driver.get(embedded.url + "/book")
    eventually(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#equity canvas")) == 2, 15,
               "equity and drawdown drawn")
    assert run_id in text_of(driver, "#equity-note")
    shot(driver, "embedded-book")
    driver.get(embedded.url + "/ess")
    assert not driver.find_elements(By.ID, "trip-button")
    assert not driver.find_elements(By.ID, "reset-button")
    assert "embedded database" in text_of(driver, "main")
    with httpx.Client(base_url=embedded.url) as web:
        csrf = re.search(r'name="csrf" value="([^"]+)"', web.get("/signin").text)
        assert csrf is None or web.post("/signin", data={"csrf": csrf[1], "token": TOKEN}
                                        ).status_code == 403
        refused = web.post("/ess/trip", data={"actor": "m", "reason": "x"})
        assert refused.status_code == 403
    driver.get(embedded.url + "/runs")
    driver.find_element(By.CSS_SELECTOR, "#runs a.run-report").click()
    eventually(lambda: run_id in driver.title, 30, "the run's report opened")
    eventually(lambda: bool(driver.find_elements(By.CSS_SELECTOR, "canvas")), 15,
               "the report draws its charts")
    shot(driver, "embedded-run-report")
