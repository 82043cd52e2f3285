"""The analyst's web view (streams/ui.py) in a real browser: Debian's Chromium driven by
Playwright, over a chDB store filled by ``distillguard score --clickhouse`` on the small
scenario. Each page is also saved as a screenshot in docs/screenshots/."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import web
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, sync_playwright

from simulator.traffic import SimulatedTraffic, write_traffic
from streams.cli import main
from streams.clickhouse import Investigation, connect
from streams.ui import create_ui

pytestmark = pytest.mark.clickhouse

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed and could not be (`./run test` installs it with "
    "apt-get when run as root: apt-get install -y --no-install-recommends chromium)",
)
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DATABASE = "dg_ui"
TOKEN = "ui-test-token-5f1c"
XSS = "<script>alert(1)</script>"


class _Server:
    """An aiohttp application on a free 127.0.0.1 port, served from a thread of its own."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.url = ""
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        runner = web.AppRunner(self.app, access_log=None)
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())
        self.loop.close()

    def __enter__(self) -> str:
        self.thread.start()
        assert self.ready.wait(10), "the UI server did not start"
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def store(
    chdb_url: str, small_traffic: SimulatedTraffic, tmp_path_factory: pytest.TempPathFactory
) -> Investigation:
    """The small scenario scored into ClickHouse by the CLI, as an analyst's store would be."""
    d = tmp_path_factory.mktemp("ui")
    write_traffic(small_traffic, d / "events.jsonl", None, bad_line_rate=0.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTILLGUARD_CLICKHOUSE_DATABASE", DATABASE)
        args = ["score", "--input", str(d / "events.jsonl"), "--output", str(d / "actions.jsonl")]
        assert main([*args, "--clickhouse", chdb_url]) == 0
    return Investigation(connect(chdb_url), DATABASE)


@pytest.fixture(scope="module")
def ui(store: Investigation) -> Iterator[str]:
    with _Server(create_ui(lambda: store, None)) as url:
        yield url


@pytest.fixture(scope="module")
def ui_with_token(store: Investigation) -> Iterator[str]:
    with _Server(create_ui(lambda: store, TOKEN)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    yield context.new_page()
    context.close()


@dataclass
class Seen:
    """What a page showed besides itself: dialogs (dismissed), script and console errors."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def seen(page: Page) -> Seen:
    out = Seen()

    def dialog(d: Dialog) -> None:
        out.dialogs.append(d.message)
        d.dismiss()

    def console(m: ConsoleMessage) -> None:
        if m.type == "error":
            out.errors.append(m.text)

    page.on("dialog", dialog)
    page.on("pageerror", lambda e: out.errors.append(str(e)))
    page.on("console", console)
    return out


def _shot(page: Page, name: str, height: int = 900) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    clip = {"x": 0, "y": 0, "width": 1200, "height": height}
    page.screenshot(path=str(SHOTS / f"{name}.png"), clip=clip)  # type: ignore[arg-type]


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()


def _check_charts(page: Page, count: int) -> None:
    """``count`` charts, each with drawn paths, and a legend above the plot, never on it."""
    charts = page.locator("svg.chart")
    assert charts.count() == count
    for i in range(count):
        chart = charts.nth(i)
        assert chart.locator("path").count() >= 4
        plot = chart.locator("rect").first.bounding_box()
        assert plot is not None and plot["height"] > 100
        for box in (t.bounding_box() for t in chart.locator("text.lg").all()):
            assert box is not None and box["y"] + box["height"] <= plot["y"]
        labels = [t.text_content() or "" for t in chart.locator("text.ax").all()]
        assert any("UTC" in t for t in labels) and len(labels) == 2  # x and y axis labels


@needs_chromium
def test_top_page_links_to_an_account_with_its_charts_reasons_and_links(
    ui: str, page: Page, seen: Seen
) -> None:
    resp = page.goto(f"{ui}/ui/")
    assert resp is not None and resp.status == 200
    assert page.locator("h1").inner_text() == "top accounts"
    rows = page.locator("table tbody tr")
    assert rows.count() == 25
    # ranked by windows over the flag threshold, which does not saturate like the score does
    over = [int(rows.nth(i).locator("td").nth(2).inner_text()) for i in range(rows.count())]
    assert over == sorted(over, reverse=True) and over[0] > 1
    _shot(page, "top")

    first = rows.first.locator("td a")
    account = first.inner_text()
    first.click()
    page.wait_for_load_state()
    assert page.url == f"{ui}/ui/account/{quote(account, safe='')}"
    assert page.locator("h1").inner_text() == f"account {account}"
    _check_charts(page, 2)
    score = page.locator("svg.chart").first
    legend = [t.text_content() for t in score.locator("text.lg").all()]
    assert {"score", "flag ≥ 0.999", "throttle ≥ 0.9998", "suspend ≥ 0.99995"} <= set(legend)
    # an account is also flagged for staying near the flag line: that line is drawn too
    assert "flag: 5 in a row ≥ 0.995" in legend
    assert score.locator("g.mark").count() >= 1  # the actions on the score line
    # each action's reasons: feature, value, own and population baseline, contribution
    assert page.locator(".action").count() >= 1
    assert "population baseline" in page.locator(".action table").first.inner_text()
    assert "%" in page.locator(".action table").first.inner_text()
    assert page.locator("a[href^='/ui/ip-block/']").count() >= 1  # linked blocks, as links
    assert page.get_by_text("recent windows").count() == 1
    assert seen == Seen()  # no dialog, no script or console error
    _shot(page, "account")

    block = page.locator("table a[href^='/ui/ip-block/']").first
    cidr = block.inner_text()
    block.click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == f"IP block {cidr}"
    _check_charts(page, 2)
    legend = [t.text_content() for t in page.locator("svg.chart").first.locator("text.lg").all()]
    assert "flag ≥ 0.999" in legend and not [t for t in legend if t and "in a row" in t]
    assert page.locator(f"a[href='/ui/account/{quote(account, safe='')}']").count() >= 1
    _shot(page, "ip-block")


@needs_chromium
def test_campaign_page_shows_growth_the_links_that_hold_it_and_members(
    ui: str, page: Page, seen: Seen
) -> None:
    page.goto(f"{ui}/ui/?kind=campaign&minutes=60")
    assert page.locator("h1").inner_text() == "top campaigns"
    page.locator("table tbody tr").first.locator("td a").click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text().startswith("campaign campaign-")
    _check_charts(page, 2)
    growth = page.locator("svg.chart").first
    assert growth.locator("rect").count() > 2  # joined per window, as bars
    assert "members" in [t.text_content() for t in growth.locator("text.lg").all()]
    # what holds it together, in words ("432 accounts share 14 prompt templates")
    links = page.locator("h2:has-text('the links that hold it') + p + ul li")
    assert links.count() >= 1 and re.search(r"\d+ accounts", links.first.inner_text())
    members = page.locator("h2:has-text('members, first seen first') + table a")
    assert members.count() >= 5
    _shot(page, "campaign")
    account = members.first.inner_text()
    members.first.click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == f"account {account}"
    assert seen == Seen()  # no dialog, no script or console error


@needs_chromium
def test_a_script_as_an_account_id_is_shown_as_text_on_a_404_page(
    ui: str, page: Page, seen: Seen
) -> None:
    resp = page.goto(f"{ui}/ui/account/{quote(XSS, safe='')}")
    assert resp is not None and resp.status == 404
    assert "script-src" not in resp.headers["content-security-policy"]  # default-src 'none'
    assert XSS in page.locator("p.err").inner_text()
    assert page.locator("script").count() == 0
    page.wait_for_timeout(300)
    assert seen.dialogs == []
    # nothing ran: the only message is Chromium's note that the page answered 404
    assert all("status of 404" in e for e in seen.errors), seen.errors
    _shot(page, "not-found", 220)


def test_bad_parameters_and_unknown_pages_answer_pages_not_tracebacks(ui: str) -> None:
    for path, status, says in [
        ("/ui/?kind=user", 400, "kind must be account, ip-block or campaign"),
        ("/ui/?minutes=0", 400, "minutes must be an integer in 1..10080"),
        ("/ui/?limit=abc", 400, "limit must be an integer in 1..1000"),
        ("/ui/?kinds=account", 400, "unknown parameter &#x27;kinds&#x27;"),
        ("/ui/ip-block/not-a-block", 400, "a CIDR block such as 10.0.0.0/24"),
        (f"/ui/account/{'a' * 300}", 400, "at most 256 printable characters"),
        ("/ui/account/x%09y", 400, "printable"),
        ("/ui/campaign/nope", 404, "no campaign &#x27;nope&#x27;"),
        ("/ui/ip-block/10.255.0.0%2F24", 404, "no IP block &#x27;10.255.0.0/24&#x27;"),
        ("/ui/nothing-here", 404, "no page"),
    ]:
        code, headers, body = _get(ui + path)
        assert (code, headers["Content-Type"]) == (status, "text/html; charset=utf-8"), path
        assert says in body, path


def test_bad_parameters_are_checked_before_the_store_is_asked() -> None:
    """A store that is not open yet (the worker starting) answers 503; bad input still 400."""
    with _Server(create_ui(lambda: None, None)) as url:
        assert _get(f"{url}/ui/")[0] == 503
        assert _get(f"{url}/ui/?kind=x")[0] == 400
        assert _get(f"{url}/")[0] == 503  # / leads to /ui/


@needs_chromium
def test_with_a_token_pages_need_the_header_or_the_cookie_of_the_login_form(
    ui_with_token: str, page: Page
) -> None:
    url = ui_with_token
    code, headers, body = _get(f"{url}/ui/")
    assert code == 401 and headers["WWW-Authenticate"] == "Bearer" and "token" in body
    assert _get(f"{url}/ui/", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert _get(f"{url}/ui/", {"Authorization": "Bearer wrong"})[0] == 401
    assert _get(f"{url}/ui/", {"Cookie": f"distillguard_ui={TOKEN}"})[0] == 401
    # never in a URL, where history and access logs keep it
    assert _get(f"{url}/ui/login?token={TOKEN}")[0] == 400

    resp = page.goto(f"{url}/ui/?kind=ip-block")
    assert resp is not None and resp.status == 401
    page.fill("input[name=token]", "wrong")
    page.click("button[type=submit]")
    assert "wrong token" in page.locator("p.err").inner_text()
    _shot(page, "login", 280)
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert page.url == f"{url}/ui/?kind=ip-block"  # back where the person was going
    assert page.locator("h1").inner_text() == "top IP blocks"
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert TOKEN not in cookie["value"]
    # a login form may not send the person to another site
    page.goto(f"{url}/ui/login?next=//example.org/ui/")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert page.url == f"{url}/ui/"


def test_ui_command_refuses_a_public_host_without_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DISTILLGUARD_WEB_TOKEN", raising=False)
    assert main(["ui", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "--host 0.0.0.0 exposes investigation data; set DISTILLGUARD_WEB_TOKEN" in err


def test_ui_command_serves_any_store_until_sigterm(tmp_path: Path) -> None:
    """``distillguard ui`` on a store without tables yet: a 503 page that says so, then a clean
    stop on SIGTERM."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLGUARD_")}
    store = f"chdb://{tmp_path / 'empty'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "ui", "--port", "0", "--clickhouse", store],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.match(r"ui: (http://127\.0\.0\.1:\d+/ui/) on ClickHouse chdb://", line)
        assert match, line + (proc.stderr.read() if proc.stderr else "")
        code, _, body = _get(match.group(1))
        assert code == 503 and "UNKNOWN_DATABASE" in body
        proc.terminate()
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0 and "ui: stopped" in out, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
