"""The report page in a real browser: headless Chromium opens a small report's ``index.html``, every image on it
loads and decodes, every link resolves, and a screenshot is saved (copied to ``JAXINTERP_SCREENSHOT_DIR`` when set).

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON messages ending in a NUL
byte on file descriptors 3 and 4), so the test needs nothing beyond the standard library and the browser. Skipped
where no Chromium is installed, unless ``JAXINTERP_REQUIRE_CHROMIUM`` is set (CI installs Debian's ``chromium``),
where it fails instead."""

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

import jaxinterp
from jaxinterp.cli import main

BROWSERS = ("chromium", "chromium-browser", "chromium-headless-shell", "google-chrome", "chrome")
WINDOW = (1280, 2000)
TIMEOUT_S = 60.0


@pytest.fixture
def chromium() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    if os.environ.get("JAXINTERP_REQUIRE_CHROMIUM"):
        pytest.fail(f"JAXINTERP_REQUIRE_CHROMIUM is set but none of {', '.join(BROWSERS)} is on PATH")
    pytest.skip("no Chromium installed (CI installs it and sets JAXINTERP_REQUIRE_CHROMIUM=1)")


def _above_9(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class _DevTools:
    """A headless Chromium and one page in it, spoken to over ``--remote-debugging-pipe``."""

    def __init__(self, binary: str, profile: Path):
        # Pipe ends at descriptors >= 10, so that moving them onto 3 and 4 in the child cannot overwrite one another.
        to_browser_r, self._to_browser, self._from_browser, from_browser_w = map(
            _above_9, (*os.pipe(), *os.pipe())
        )
        args = [
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--hide-scrollbars",
            "--disable-dev-shm-usage",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
        ]
        # bash moves the pipe ends to the descriptors Chromium reads (3) and writes (4), then becomes Chromium.
        moves = f"3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-"
        self._proc = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" {moves}', binary, *args],
            pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        # CDP names an attached target's channel by this protocol field.
        self._page_id = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def send(self, method: str, to_page: bool = False, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if to_page:
            message["sessionId"] = self._page_id
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def page(self, method: str, **params) -> dict:
        return self.send(method, to_page=True, **params)

    def wait_for(self, event: str) -> dict:
        while True:
            for i, message in enumerate(self.events):
                if message.get("method") == event:
                    return self.events.pop(i)
            self.events.append(self._receive())

    def _receive(self) -> dict:
        deadline = time.monotonic() + TIMEOUT_S
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise AssertionError(f"Chromium said nothing for {TIMEOUT_S:g} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise AssertionError(f"Chromium closed the pipe: {self._proc.stderr.read().decode()[-2000:]}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (AssertionError, OSError):
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc.stderr.close()
        os.close(self._to_browser)
        os.close(self._from_browser)


# Run in the page once it has loaded: each image's state and whether it decodes, each link's target, the ids.
_INSPECT = """(async () => ({
  images: await Promise.all([...document.images].map(async (img) => ({
    src: img.currentSrc || img.src, complete: img.complete, width: img.naturalWidth,
    decodes: await img.decode().then(() => true, () => false)}))),
  links: [...document.links].map((a) => a.href),
  ids: [...document.querySelectorAll("[id]")].map((e) => e.id),
  title: document.title,
}))()"""


def open_in_chromium(binary: str, page: Path, screenshot: Path, profile: Path) -> tuple[dict, list[dict]]:
    """Load ``page`` in headless Chromium at the report's window size, save a PNG of the window to ``screenshot``,
    and return what ``_INSPECT`` found with the requests that failed (``Network.loadingFailed``)."""
    browser = _DevTools(binary, profile)
    try:
        browser.page("Page.enable")
        browser.page("Network.enable")
        browser.page(
            "Emulation.setDeviceMetricsOverride",
            width=WINDOW[0],
            height=WINDOW[1],
            deviceScaleFactor=1,
            mobile=False,
        )
        url = page.resolve().as_uri()
        navigated = browser.page("Page.navigate", url=url)
        assert "errorText" not in navigated, navigated
        browser.wait_for("Page.loadEventFired")
        found = browser.page("Runtime.evaluate", expression=_INSPECT, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in found, found
        shot = browser.page("Page.captureScreenshot", format="png")
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        failed = [e["params"] for e in browser.events if e.get("method") == "Network.loadingFailed"]
        return found["result"]["value"], failed
    finally:
        browser.close()


def _file_of(url: str) -> Path:
    parts = urllib.parse.urlsplit(url)
    assert parts.scheme == "file", (
        f"{url}: the report should link only its own files (can't check it offline)"
    )
    return Path(urllib.request.url2pathname(parts.path))


@pytest.mark.slow
def test_report_page_in_chromium(chromium, tmp_path, monkeypatch, capsys):
    # A small report of a random agent, as test_agent_report writes one (the first layer: 16 channels).
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    checkpoint = jaxinterp.save_agent(jaxinterp.Agent.random("impala", seed=3), tmp_path / "agent.pt")
    out = tmp_path / "report"
    args = ["report", "--checkpoint", str(checkpoint), "--layers", "conv_seqs.0.conv", "--frames", "16"]
    assert main([*args, "--k", "2", "--steps", "2", "--out", str(out)]) == 0
    capsys.readouterr()

    screenshot = tmp_path / "report.png"
    found, failed = open_in_chromium(chromium, out / "index.html", screenshot, tmp_path / "profile")
    # The screenshot is kept before the checks, so that a failing page can be looked at too.
    if where := os.environ.get("JAXINTERP_SCREENSHOT_DIR"):
        Path(where).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(where) / "report.png")

    assert found["title"].startswith("jaxinterp report")
    assert not failed, failed
    images = found["images"]
    assert len(images) >= 4 * 16  # mean, centre, top examples and mosaic per channel
    broken = [i["src"] for i in images if not (i["complete"] and i["width"] > 0 and i["decodes"])]
    assert not broken, broken
    for image in images:  # Chromium shows a truncated PNG as far as it goes: decode each file in full too
        path = _file_of(image["src"])
        assert path.is_relative_to(out.resolve()), path
        with Image.open(path) as im:
            im.load()
    links = found["links"]
    assert links
    for link in links:
        target, fragment = _file_of(link), urllib.parse.urlsplit(link).fragment
        assert target.is_file(), link
        if target == (out / "index.html").resolve():
            assert fragment in found["ids"], link
        elif target.suffix == ".png":
            with Image.open(target) as im:
                im.load()

    with Image.open(screenshot) as im:
        assert im.size == WINDOW
        assert len(set(im.convert("L").resize((64, 100)).get_flattened_data())) > 8  # not a blank page
