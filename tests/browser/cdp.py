"""Just enough of the Chrome DevTools Protocol to drive a headless Chromium from a test, over
the `websockets` package the project already depends on (no playwright, no selenium).

    async with Chromium(exe, workdir) as browser:
        page = await browser.new_page()
        await page.navigate("http://127.0.0.1:8000/")
        await page.click("#halt")  # a real mouse click at the button's centre

One websocket to the browser; each page is a target attached in "flat" mode, so its
commands and events travel on the same socket tagged with its session id. Replies and events
are read by one task: a command that opens a dialog (a click on a button that asks
`window.confirm`) does not answer until the dialog is closed, and the dialog handler must be
able to send its answer meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

EXECUTABLES = ("chromium", "chromium-browser", "google-chrome")
# Generous: the CI machine has two slow cores and may be running other suites.
LAUNCH_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 30.0
WS_URL = re.compile(r"DevTools listening on (ws://\S+)")


class CDPError(Exception):
    """The browser refused a command, or the page threw."""


def find_chromium() -> str | None:
    """BATON_CHROMIUM (a path or a name on the PATH), else the first of EXECUTABLES found."""
    explicit = os.environ.get("BATON_CHROMIUM")
    if explicit:
        return shutil.which(explicit)
    return next((p for name in EXECUTABLES if (p := shutil.which(name))), None)


class Connection:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._handlers: dict[tuple[str | None, str], list[Callable[[dict[str, Any]], None]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 0,
    ) -> dict[str, Any]:
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await self.ws.send(json.dumps(msg))
        try:
            return await asyncio.wait_for(fut, timeout or COMMAND_TIMEOUT_S)
        except TimeoutError:
            raise CDPError(f"{method}: no answer within {timeout or COMMAND_TIMEOUT_S:.0f} s") from None
        finally:
            self._pending.pop(msg_id, None)

    def on(self, method: str, fn: Callable[[dict[str, Any]], None], session: str | None = None) -> None:
        """Calls fn(params) for every event `method` (of `session`); fn must not block."""
        self._handlers.setdefault((session, method), []).append(fn)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if "id" in msg:
                    fut = self._pending.get(msg["id"])
                    if fut is None or fut.done():
                        continue
                    if "error" in msg:
                        fut.set_exception(
                            CDPError(f"{msg['error'].get('message')} ({msg['error'].get('code')})")
                        )
                    else:
                        fut.set_result(msg.get("result", {}))
                else:
                    for fn in self._handlers.get((msg.get("sessionId"), msg.get("method", "")), []):
                        fn(msg.get("params", {}))
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(CDPError("the browser closed the DevTools connection"))

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class Page:
    def __init__(self, conn: Connection, session: str) -> None:
        self.conn = conn
        self.session = session
        # The messages of the dialogs the page opened, and the answer the next ones get.
        self.dialogs: list[str] = []
        self.accept_dialogs = True
        # Uncaught exceptions, console.error calls and browser errors (a CSP refusal, a failed
        # load), as text: a page that works by accident still shows up here.
        self.errors: list[str] = []
        self._loaded = asyncio.Event()
        conn.on("Page.loadEventFired", lambda _p: self._loaded.set(), session)
        conn.on("Page.javascriptDialogOpening", self._dialog, session)
        conn.on("Runtime.exceptionThrown", self._exception, session)
        conn.on("Runtime.consoleAPICalled", self._console, session)
        conn.on("Log.entryAdded", self._log_entry, session)

    async def send(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 0
    ) -> dict[str, Any]:
        return await self.conn.send(method, params, self.session, timeout)

    def _dialog(self, params: dict[str, Any]) -> None:
        self.dialogs.append(params.get("message", ""))
        # Sent from a task: the click that opened the dialog is still waiting for its answer.
        asyncio.get_running_loop().create_task(
            self.send("Page.handleJavaScriptDialog", {"accept": self.accept_dialogs})
        )

    def _exception(self, params: dict[str, Any]) -> None:
        details = params.get("exceptionDetails", {})
        self.errors.append(
            f"exception: {details.get('exception', {}).get('description') or details.get('text')}"
        )

    def _console(self, params: dict[str, Any]) -> None:
        if params.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.errors.append(f"console.{params['type']}: {args}")

    def _log_entry(self, params: dict[str, Any]) -> None:
        entry = params.get("entry", {})
        if entry.get("level") == "error":
            self.errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())

    async def navigate(self, url: str, timeout: float = COMMAND_TIMEOUT_S) -> None:
        self._loaded.clear()
        res = await self.send("Page.navigate", {"url": url})
        if res.get("errorText"):
            raise CDPError(f"navigating to {url}: {res['errorText']}")
        await asyncio.wait_for(self._loaded.wait(), timeout)

    async def evaluate(self, expression: str, timeout: float = 0) -> Any:
        """The value of a JS expression (promises awaited), or CDPError with what it threw."""
        res = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            timeout,
        )
        if "exceptionDetails" in res:
            details = res["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"{expression[:80]!r} threw: {text}")
        return res.get("result", {}).get("value")

    async def wait_for(self, expression: str, what: str, timeout: float = COMMAND_TIMEOUT_S) -> None:
        """Polls a JS expression until it is truthy (in JS: a DOM node comes back by value as
        `{}`); survives navigations in between."""
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            try:
                if await self.evaluate(f"!!({expression})"):
                    return
            except CDPError as e:  # e.g. "Execution context was destroyed" while navigating
                last_error = str(e)
            await asyncio.sleep(0.1)
        body = await self.text()
        raise AssertionError(
            f"timed out after {timeout:.0f} s waiting for {what} {last_error}\npage: {body[:2000]}"
        )

    async def text(self) -> str:
        try:
            return str(await self.evaluate("document.body ? document.body.innerText : ''"))
        except CDPError as e:
            return f"(page text unavailable: {e})"

    async def click(self, selector: str) -> None:
        """A real left click (mouse move, press, release) at the centre of the element, as a
        person's click: the page sees trusted events, hit-testing and all."""
        box = await self.evaluate(
            f"""(() => {{
                const e = document.querySelector({json.dumps(selector)});
                if (!e) return null;
                e.scrollIntoView({{block: 'center'}});
                const r = e.getBoundingClientRect();
                return {{x: r.left + r.width / 2, y: r.top + r.height / 2}};
            }})()"""
        )
        if box is None:
            raise CDPError(f"no element {selector!r} to click")
        base = {"x": box["x"], "y": box["y"]}
        await self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", **base})
        await self.send(
            "Input.dispatchMouseEvent", {"type": "mousePressed", "button": "left", "clickCount": 1, **base}
        )
        await self.send(
            "Input.dispatchMouseEvent", {"type": "mouseReleased", "button": "left", "clickCount": 1, **base}
        )

    async def type_into(self, selector: str, text: str) -> None:
        """Focuses an input and types into it (one insertText: what a paste does)."""
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.send("Input.insertText", {"text": text})

    async def screenshot(self, path: Path) -> Path:
        """The whole page (not just the viewport) as a PNG."""
        size = (await self.send("Page.getLayoutMetrics"))["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        res = await self.send(
            "Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True}
        )
        path.write_bytes(base64.b64decode(res["data"]))
        return path


class Chromium:
    """A headless Chromium with its own profile under `workdir`, for one test."""

    def __init__(self, executable: str, workdir: Path, width: int = 1440, height: int = 1000) -> None:
        self.executable = executable
        self.workdir = workdir
        self.size = (width, height)
        self.log_path = workdir / "chromium.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: Connection | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def __aenter__(self) -> Chromium:
        profile = self.workdir / "profile"
        profile.mkdir(parents=True, exist_ok=True)
        args = [
            self.executable,
            "--headless=new",
            "--no-sandbox",  # root in a container: the sandbox cannot start
            "--disable-gpu",
            "--disable-dev-shm-usage",  # containers have a small /dev/shm
            "--remote-debugging-port=0",  # any free port: the ws URL says which
            f"--user-data-dir={profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--password-store=basic",
            "--mute-audio",
            f"--window-size={self.size[0]},{self.size[1]}",
            "about:blank",
        ]
        # stderr to a file rather than a pipe: nobody has to keep draining it for Chromium to
        # go on, and the file is there to quote when something fails.
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            url = await self._devtools_url()
            ws = await connect(url, max_size=None, ping_interval=None, open_timeout=LAUNCH_TIMEOUT_S)
        except BaseException:
            await self._stop()
            raise
        self.conn = Connection(ws)
        return self

    async def _devtools_url(self) -> str:
        assert self.proc is not None
        deadline = time.monotonic() + LAUNCH_TIMEOUT_S
        while time.monotonic() < deadline:
            if m := WS_URL.search(self.log()):
                return m.group(1)
            if self.proc.poll() is not None:
                raise CDPError(f"{self.executable} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.05)
        raise CDPError(
            f"{self.executable} did not print its DevTools URL in {LAUNCH_TIMEOUT_S:.0f} s:\n{self.log()}"
        )

    async def new_page(self) -> Page:
        assert self.conn is not None
        target = await self.conn.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.conn.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self.conn, attached["sessionId"])
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send("Log.enable")
        width, height = self.size
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        return page

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    async def _stop(self) -> None:
        asked = False
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.send("Browser.close", timeout=5)
                asked = True
            with contextlib.suppress(Exception):
                await self.conn.close()
            self.conn = None
        if self.proc is not None:
            if not asked:  # it never started properly, or does not answer: SIGTERM it
                self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 10)
            self.proc = None
