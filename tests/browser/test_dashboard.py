"""The dashboard in a real headless Chromium, driven over the DevTools protocol: sign in with
the token, see the seeded system, and use the buttons as an operator would (real mouse
clicks, the confirmation dialog answered), checking the effect in Redis.

Screenshots go to the test's tmp dir, and to $BATON_SCREENSHOT_DIR when set."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path

from control import commands as c
from tests.browser import seed
from tests.browser.cdp import Chromium, Page
from tests.browser.conftest import TOKEN, Served

# The page is drawn: every slot has a row with a running countdown, the PnL chart and the
# tick bars are there, and the event stream is connected.
DRAWN = """(() => {
  const rows = document.querySelectorAll('#slots tbody tr');
  const cd = document.querySelector('#slots tbody td.countdown');
  return rows.length === SLOTS && /^\\d\\d:\\d\\d$/.test(cd.textContent)
    && document.querySelectorAll('#pnl-chart path').length === 2
    && document.querySelectorAll('#tick-spark rect').length === TICKS
    && document.querySelector('#conn').className === 'on';
})()""".replace("SLOTS", str(len(seed.SLOTS))).replace("TICKS", str(seed.TICKS))


def text_of(selector: str) -> str:
    return f"((document.querySelector({json.dumps(selector)}) || {{}}).textContent || '')"


async def screenshot(page: Page, tmp_path: Path, name: str) -> None:
    path = await page.screenshot(tmp_path / name)
    if out := os.environ.get("BATON_SCREENSHOT_DIR"):
        shutil.copy(path, Path(out) / name)


async def sign_in(page: Page, served: Served) -> None:
    await page.navigate(served.url + "/")
    await page.wait_for("document.querySelector('input[name=token]')", "the login form")
    await page.type_into("#token", "not the token")
    await page.click("#signin")
    await page.wait_for(f"{text_of('#message')}.includes('Wrong token')", "the wrong-token message")
    await page.type_into("#token", TOKEN)
    await page.click("#signin")
    await page.wait_for("document.querySelector('#halt')", "the dashboard after signing in")
    # The cookie is HttpOnly: the page's scripts cannot read it (nor could an injected one).
    assert await page.evaluate("document.cookie") == ""


async def test_an_operator_signs_in_sees_the_system_and_halts_it(
    served: Served, browser: Chromium, tmp_path: Path
):
    page = await browser.new_page()
    await sign_in(page, served)
    await page.wait_for(DRAWN, "slots, PnL chart, tick bars and a live event stream", timeout=30)

    body = await page.text()
    assert "TRADING" in body and f"epoch {seed.EPOCH}" in body and seed.RELEASE in body
    assert await page.evaluate(text_of("#pnl-stats")) == (
        "+$1.54realised$96.54cash4trades1open67%win rate2 / 3won / settled"
    )
    disabled = await page.evaluate(f"document.querySelector('tr[data-slot=\"{seed.DISABLED}\"]').className")
    assert disabled == "disabled"
    await screenshot(page, tmp_path, "dashboard.png")

    # Halt asks first; dismissing the question does nothing.
    page.accept_dialogs = False
    await page.click("#halt")
    await asyncio.sleep(0.5)
    assert len(page.dialogs) == 1 and "HALT ALL TRADING" in page.dialogs[0]
    assert served.r.hget(seed.K.control(), "halted") in (None, "0")

    page.accept_dialogs = True
    await page.click("#halt")
    await page.wait_for("document.querySelector('#banner').className === 'halted'", "the halted banner")
    await page.wait_for(f"{text_of('#result')}.includes('HALTED (seq')", "the halt's result")
    assert len(page.dialogs) == 2
    assert served.r.hget(seed.K.control(), "halted") == "1"
    _id, audit = served.r.xrevrange(seed.K.audit(), count=1)[0]
    assert (audit["action"], audit["source"], audit["result"]) == ("halt", "api", "ok")
    assert audit["token_id"] == served.token.id
    assert (await page.evaluate("document.title")).startswith("HALTED")
    # Enabled once the halt's call is no longer in flight: the redraw after it, not the title's.
    await page.wait_for("document.querySelector('#resume').disabled === false", "resume enabled")
    await screenshot(page, tmp_path, "dashboard-halted.png")

    # A resume from another door (the CLI) reaches the open page through the event stream.
    await asyncio.to_thread(served.ops.resume, c.Actor(source="cli", who="test"))
    await page.wait_for("document.querySelector('#banner').className === 'trading'", "the pushed resume")
    # Nothing went wrong on the way but the refused sign-in (a CSP refusal would show here).
    assert [e for e in page.errors if "401" not in e or "/login" not in e] == []


async def test_a_slot_is_disabled_from_its_row(served: Served, browser: Chromium):
    page = await browser.new_page()
    await sign_in(page, served)
    await page.wait_for(DRAWN, "the slots")
    await page.click('button[data-slot="btc-5m"]')
    await page.wait_for(
        "document.querySelector('tr[data-slot=\"btc-5m\"]').className === 'disabled'", "the disabled row"
    )
    assert "Disable slot btc-5m?" in page.dialogs[0]
    assert json.loads(served.r.hget(seed.K.slots(), "btc-5m"))["enabled"] is False
    # The row may turn grey from the pushed slot change before the click's own answer lands.
    await page.wait_for(
        "document.querySelector('#result').textContent.includes('slot btc-5m disabled')", "the answer"
    )
    assert await page.evaluate(text_of('button[data-slot="btc-5m"]')) == "Enable"
    assert [e for e in page.errors if "401" not in e or "/login" not in e] == []


async def test_signing_out_everywhere_ends_the_sessions_on_the_server(served: Served, browser: Chromium):
    page = await browser.new_page()
    await sign_in(page, served)
    await page.wait_for(DRAWN, "the dashboard")
    [key] = served.r.keys(seed.K.session("*"))
    assert served.r.zcard(seed.K.sessions()) == 1
    await page.click("#signout-all")
    await page.wait_for("document.querySelector('input[name=token]')", "the login form after signing out")
    # Gone from Redis, not only from the browser: a copy of the cookie opens nothing.
    assert served.r.exists(key, seed.K.sessions()) == 0
    _id, audit = served.r.xrevrange(seed.K.audit(), count=1)[0]
    assert (audit["action"], audit["detail"]) == ("logout_all", "1 sessions ended")
    assert [e for e in page.errors if "401" not in e or "/login" not in e] == []


def rows_of(table: str) -> str:
    return f"Array.from(document.querySelectorAll('#{table} tbody tr')).map((tr) => tr.textContent)"


async def test_the_decision_log_sleeping_slots_and_unfilled_orders_are_shown(
    served: Served, browser: Chromium, tmp_path: Path
):
    page = await browser.new_page()
    await sign_in(page, served)
    await page.wait_for(DRAWN, "the dashboard")
    await page.wait_for(
        "document.querySelectorAll('#decisions tbody tr').length === 4",
        "every slot's decisions, newest first",
    )
    rows = await page.evaluate(rows_of("decisions"))
    actions = await page.evaluate(
        "Array.from(document.querySelectorAll('#decisions tbody td:nth-child(3)'))"
        ".map((td) => td.textContent)"
    )
    assert actions == ["sell", "buy", "pass", "pass"]
    assert "9.09 sh UP @ 0.7 FAK" in rows[0] and "take profit at 0.70" in rows[0] and "held 9.09" in rows[0]
    assert "up 0.53/0.55" in rows[1] and "$5.00 FOK" in rows[1]

    # Each slot's newest evaluation in its row, and until when a sleeping one sleeps.
    cell = 'tr[data-slot="{}"] td:nth-child(5)'
    assert (await page.evaluate(text_of(cell.format("btc-15m")))).startswith(
        "sell UP @ 0.7 · intent · take profit"
    )
    asleep = await page.evaluate(text_of(cell.format(seed.ASLEEP)))
    assert re.search(r"asleep until \d\d:\d\d:\d\d", asleep), asleep

    # A slot's name chooses its log.
    await page.click('tr[data-slot="eth-15m"] a.slot-link')
    await page.wait_for(
        f"{rows_of('decisions')}.length === 1 && {rows_of('decisions')}[0].includes('no decision')",
        "eth-15m's decisions only",
    )
    assert await page.evaluate("document.querySelector('#dec-slot').value") == "eth-15m"

    # Unfilled orders are an outcome (plain), errors a fault (red).
    notes = await page.evaluate(
        "Array.from(document.querySelectorAll('#ticks tbody td:last-child span'))"
        ".map((s) => [s.textContent, s.className])"
    )
    assert [f"{seed.UNFILLED} unfilled", "muted"] in notes and [f"{seed.ERRORS} errors", "age-bad"] in notes
    await screenshot(page, tmp_path, "dashboard-decisions.png")
    assert [e for e in page.errors if "401" not in e or "/login" not in e] == []


async def test_a_slot_is_added_with_a_chosen_strategy_and_removed_from_the_editor(
    served: Served, browser: Chromium
):
    page = await browser.new_page()
    await sign_in(page, served)
    await page.wait_for(DRAWN, "the slots")
    await page.click("#slot-editor summary")
    await page.wait_for("document.querySelector('#slot-form').strategy.options.length > 0", "the chooser")
    await page.evaluate(
        "(() => { const f = document.querySelector('#slot-form'); f.timeframe.value = '1h';"
        " f.strategy.value = 'snipe'; f.strategy.dispatchEvent(new Event('change')); })()"
    )
    assert "edge=0.03 [0, 0.5]" in await page.evaluate(text_of("#slot-hint"))  # its declarations
    await page.type_into("#slot-form input[name=id]", "eth-1h.snipe")
    await page.type_into("#slot-form input[name=asset]", "eth")
    await page.type_into("#slot-form input[name=params]", "edge=0.05")
    await page.click("#slot-add")
    await page.wait_for("document.querySelector('tr[data-slot=\"eth-1h.snipe\"]') !== null", "the new row")
    assert "Add slot eth-1h.snipe (eth 1h, snipe)?" in page.dialogs[-1]
    stored = json.loads(served.r.hget(seed.K.slots(), "eth-1h.snipe"))
    assert (stored["timeframe"], stored["strategy"], stored["params"]) == ("1h", "snipe", {"edge": 0.05})

    # A bad parameter is refused with the server's reason; nothing changes.
    await page.evaluate("document.querySelector('#slot-form').params.value = 'edge=0.9'")
    await page.click("#slot-save")
    await page.wait_for(f"{text_of('#result')}.includes('outside [0.0, 0.5]')", "the refusal")
    assert json.loads(served.r.hget(seed.K.slots(), "eth-1h.snipe"))["params"] == {"edge": 0.05}

    await page.click('button[data-edit="eth-1h.snipe"]')  # the form again holds the row's values
    assert await page.evaluate("document.querySelector('#slot-form').params.value") == "edge=0.05"
    await page.click("#slot-remove")
    await page.wait_for("document.querySelector('tr[data-slot=\"eth-1h.snipe\"]') === null", "the row gone")
    assert "Remove slot eth-1h.snipe?" in page.dialogs[-1]
    assert not served.r.hexists(seed.K.slots(), "eth-1h.snipe")
    refused = "status of 400 (Bad Request)"  # the bad parameter's answer, expected
    assert [e for e in page.errors if ("401" not in e or "/login" not in e) and refused not in e] == []
