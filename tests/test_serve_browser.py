"""End to end in headless Chromium: the page opens a session, keys drive the world, frames change
and the meters show numbers. Driven over the Chrome DevTools protocol with a minimal client (the
`websockets` package), so no browser download is needed; skipped where Chromium is missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
websockets_sync = pytest.importorskip("websockets.sync.client")

from _serve_helpers import debug_model, live_server, write_dataset  # noqa: E402
from worldline.data.format import Dataset  # noqa: E402
from worldline.serve import ServeConfig, World, create_app  # noqa: E402

pytestmark = pytest.mark.timeout(180)
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
KEYS = {"ArrowRight": 39, "ArrowUp": 38, "ArrowLeft": 37, "ArrowDown": 40}


def find_browser() -> str | None:
    env = os.environ.get("WORLDLINE_CHROMIUM")
    if env:
        return env
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


class Browser:
    """A headless Chromium and one page, spoken to over the DevTools protocol."""

    def __init__(self, binary: str, profile: Path):
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--mute-audio", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "--window-size=1200,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.is_file() or len(port_file.read_text().split()) < 2:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                err = (self.proc.stderr.read() if self.proc.stderr else "")[-500:]
                pytest.skip(f"Chromium ({binary}) did not start headless: {err.strip() or 'no DevToolsActivePort after 60 s'}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        import httpx

        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websockets_sync.connect(page["webSocketDebuggerUrl"], max_size=None).__enter__()
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(f"(() => {{ try {{ return {expression}; }} catch (e) {{ return null; }} }})()")  # the page may still load
            if value:
                return value
            time.sleep(0.1)
        log, status = self.js("document.getElementById('log').textContent"), self.js("document.getElementById('status').textContent")
        raise AssertionError(f"timed out waiting for {expression}; page status {status!r}, log {log!r}")

    def key(self, code: str, down: bool):
        self.call("Input.dispatchKeyEvent", type="keyDown" if down else "keyUp", code=code, key=code,
                  windowsVirtualKeyCode=KEYS[code], nativeVirtualKeyCode=KEYS[code])

    def close(self):
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def browser():
    binary = find_browser()
    if binary is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; or set WORLDLINE_CHROMIUM=/path/to/chrome)")
    profile = Path(tempfile.mkdtemp(prefix="worldline-chromium-"))
    b = Browser(binary, profile)
    try:
        yield b
    finally:
        b.close()
        for _ in range(50):  # chromium's helper processes may still write into the profile for a moment after it exits
            shutil.rmtree(profile, ignore_errors=True)
            if not profile.exists():
                break
            time.sleep(0.1)


def test_page_plays_in_headless_chromium(browser, tmp_path):
    write_dataset(tmp_path / "data")
    world = World(debug_model(), Dataset(tmp_path / "data"), name="debug", meta={"type": "deterministic", "preset": "wm-deterministic", "size": "debug"})
    with live_server(create_app(ServeConfig(fps=30), world)) as url:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=url + "/")
        browser.wait_for("Number(document.getElementById('dream').dataset.frames) >= 3")
        assert "deterministic" in browser.js("document.getElementById('model-name').textContent")
        assert "ArrowRight" in browser.js("JSON.stringify(controls)")

        def picture():
            return browser.js("document.getElementById('dream').toDataURL()")

        frames_before = int(browser.js("document.getElementById('dream').dataset.frames"))
        first = picture()
        browser.key("ArrowRight", True)
        browser.key("ArrowUp", True)
        browser.wait_for(f"Number(document.getElementById('dream').dataset.frames) >= {frames_before + 10}")
        browser.key("ArrowUp", False)
        browser.key("ArrowRight", False)
        browser.wait_for(f"Number(document.getElementById('dream').dataset.frames) >= {frames_before + 15}")
        assert picture() != first  # the world moved on screen
        fps = browser.wait_for("(t => /^[0-9]+$/.test(t) && Number(t) > 0 ? t : '')(document.getElementById('fps').textContent)")
        assert int(fps) > 0
        latency = browser.wait_for("(t => /^[0-9]+$/.test(t) ? t : '')(document.getElementById('latency').textContent)")
        assert int(latency) >= 0  # key presses were answered by frames that carry their sequence numbers
        assert browser.js("document.getElementById('status').classList.contains('error')") is False
        assert browser.js("getComputedStyle(document.getElementById('text-row')).display") == "none"  # no text model
        browser.js("document.getElementById('checkpoint').click()")
        browser.wait_for("document.querySelectorAll('#checkpoints button').length >= 2")  # restore + branch
