"""The HTML report in a real browser: headless Chromium at a phone's and a desktop's width.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``), which
sets the viewport exactly (``--window-size`` cannot go under 500 px in headless mode). At each
width the page must lay out without anything wider than the screen, show the chart (its
pixels are in the screenshot) and the tables, and hold the report's totals in its DOM.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlmodel import Session

from monitor import db
from monitor.report import build_weekly, write_files
from monitor.report.chart import BATCH_COLOR, HEIGHT, REALTIME_COLOR, WIDTH
from tests.reportkit import WEEK2, collected_url, report_now, report_settings, scenario

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """A headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4)."""

    def __init__(self) -> None:
        assert CHROMIUM is not None
        self.profile = tempfile.mkdtemp(prefix="bm-chromium-")
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()

        def wire() -> None:  # in the child: the protocol's fixed descriptors
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [
                CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--hide-scrollbars", f"--user-data-dir={self.profile}",
                "--remote-debugging-pipe", "about:blank",
            ],
            pass_fds=(3, 4),
            preexec_fn=wire,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._id = 0
        self._buf = b""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events in between are skipped)."""
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            while b"\0" not in self._buf:
                assert time.monotonic() < deadline, f"no answer to {method}"
                chunk = os.read(self._r, 1 << 20)
                assert chunk, "chromium exited"
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._id:
                assert "error" not in answer, answer["error"]
                return dict(answer["result"])

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command to the page."""
        return self.call(method, self.session, **params)

    def evaluate(self, expression: str) -> Any:
        """Evaluate JavaScript in the page and return its value."""
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def open(self, url: str, width: int, mobile: bool) -> None:
        """Show ``url`` in a viewport ``width`` CSS pixels wide, and wait until it is drawn."""
        self.page(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=900,
            deviceScaleFactor=1,
            mobile=mobile,
        )
        self.page("Page.navigate", url=url)
        deadline = time.monotonic() + 30
        ready = "document.readyState === 'complete' && [...document.images].every(i => i.complete)"
        while not self.evaluate(ready):
            assert time.monotonic() < deadline, "the page did not finish loading"
            time.sleep(0.05)

    def screenshot(self) -> Image.Image:
        """Return a screenshot of the whole page."""
        data = self.page("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return Image.open(io.BytesIO(base64.b64decode(data["data"]))).convert("RGB")

    def close(self) -> None:
        """Close the browser and remove its profile."""
        try:
            self.call("Browser.close")
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
        finally:
            os.close(self._w)
            os.close(self._r)
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run does)")
    b = Browser()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def html_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    engine = db.make_engine(collected_url("sqlite", tmp_path_factory))
    try:
        with Session(engine) as session:
            s = scenario()
            report = build_weekly(session, WEEK2, report_now(s), report_settings())
    finally:
        engine.dispose()
    out = tmp_path_factory.mktemp("html")
    paths = write_files(report, out, ("html",))
    return paths[0], report.to_json()


# What the page must show: every block's right edge inside the screen, no horizontal scrolling.
LAYOUT = """(() => {
  const w = window.innerWidth;
  const boxes = [...document.querySelectorAll('h1, h2, p, li, table, img, .card, td, th')];
  const outside = boxes.filter(e => { const r = e.getBoundingClientRect();
      return r.width > 0 && (r.left < -0.5 || r.right > w + 0.5); })
    .map(e => e.tagName + '#' + e.id + ' ' + e.textContent.slice(0, 40));
  const img = document.getElementById('chart'); const box = img.getBoundingClientRect();
  return {width: w, scrollWidth: document.documentElement.scrollWidth, outside: outside,
          image: {natural: img.naturalWidth, shown: box.width, top: box.top + scrollY,
                  left: box.left, height: box.height},
          tables: [...document.querySelectorAll('table')].map(t => t.id),
          total: document.getElementById('totals').dataset.totalUsd,
          change: document.getElementById('totals').dataset.changeUsd,
          headline: document.getElementById('headline').textContent,
          text: document.body.innerText};
})()"""


def _colour_share(image: Image.Image, box: tuple[int, int, int, int], hex_colour: str) -> float:
    """Return the share of pixels in ``box`` within a small distance of ``hex_colour``."""
    target = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    region = np.asarray(image.crop(box), dtype=int)
    near = np.abs(region - target).sum(axis=2) < 30
    return float(near.mean())


@pytest.mark.parametrize(("width", "mobile"), [(390, True), (1280, False)])
def test_the_page_fits_and_shows_chart_tables_and_totals(
    browser: Browser, html_report: tuple[Path, dict[str, Any]], width: int, mobile: bool
) -> None:
    path, data = html_report
    browser.open(path.as_uri(), width, mobile)
    layout = browser.evaluate(LAYOUT)
    assert layout["width"] == width
    assert layout["scrollWidth"] <= width, "the page scrolls sideways"
    assert layout["outside"] == [], "cut off on the right or left"
    image = layout["image"]
    assert image["natural"] == WIDTH
    # It fills its card (the page is at most 960 px wide) and is never wider than the screen.
    assert min(width, 960) * 0.85 <= image["shown"] <= min(width, WIDTH)
    assert layout["tables"] == [
        "totals", "drivers", "movers-model", "movers-workspace", "movers-workload", "batches",
    ]  # fmt: skip
    # The DOM holds the totals, in the JSON's own terms and in words.
    assert (layout["total"], layout["change"]) == (data["total_cost_usd"], data["change_usd"])
    total = f"${float(data['total_cost_usd']):,.2f}"
    assert layout["headline"].startswith(f"{total} this week")
    for driver in ("volume", "model mix", "tier shift", "cache", "price", "other"):
        assert driver in layout["text"]
    for regression in data["regressions"]:
        assert regression["kind"] in layout["text"]

    shot = browser.screenshot()
    assert shot.size[0] == width
    # Not blank: plenty of the page is text and lines, not background.
    pixels = np.asarray(shot, dtype=int)
    background = pixels[-2, 1]
    drawn = (np.abs(pixels - background).sum(axis=2) > 0).mean()
    assert drawn > 0.05
    # The chart is drawn where the page put it: its bars' colours fill part of that box.
    left, top = int(image["left"]), int(image["top"])
    box = (left, top, left + int(image["shown"]), top + int(image["height"]))
    assert box[3] <= shot.size[1] and int(image["height"]) >= image["shown"] * HEIGHT / WIDTH - 2
    assert _colour_share(shot, box, BATCH_COLOR) > 0.03
    assert _colour_share(shot, box, REALTIME_COLOR) > 0.02


def test_a_chart_drawn_in_a_child_process_is_the_same_png(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The daemon draws in a child (matplotlib never enters its memory); nothing else differs."""
    import sys

    from monitor.report import chart

    engine = db.make_engine(collected_url("sqlite", tmp_path_factory))
    try:
        with Session(engine) as session:
            report = build_weekly(session, WEEK2, report_now(scenario()), report_settings())
    finally:
        engine.dispose()
    here = chart.chart_png(report)
    chart.draw_in_child()
    try:
        child = chart.chart_png(report)
    finally:
        chart.draw_in_child(False)
    assert child == here and child.startswith(b"\x89PNG")
    # The drawing needs matplotlib; the child took it, this test's parent already had it, but a
    # fresh process that only calls chart_png in child mode never imports it.
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, json; from monitor.report import chart; "
         "chart.draw_in_child(); "
         "print(json.dumps('matplotlib' in sys.modules))"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert probe.stdout.strip() == "false"
