"""The demo in a real browser: start examples/hub_demo/app.py on 127.0.0.1, drive headless Chromium (the Debian
package) through Playwright's Python API, upload the sample, press Deblur, wait for the output video, check it and
save a screenshot.

Needs `chromium` (apt) and `playwright` (pip; no `playwright install`: the system Chromium is used). Without them
the test is skipped and says why. By default it runs a tiny random pipeline on a synthetic 8-frame clip at 2 steps;
for the real thing (the screenshot to commit, the demo's time on the sample):

    VIDEO_DEBLUR_BROWSER_MODEL=default VIDEO_DEBLUR_BROWSER_SAMPLE=examples/sample_blurred.mp4 \
    VIDEO_DEBLUR_BROWSER_STEPS=10 VIDEO_DEBLUR_SAVE_SCREENSHOT=1 pytest -s tests/hub/test_demo_browser.py

VIDEO_DEBLUR_SAVE_SCREENSHOT=1 copies the screenshot to examples/hub_demo/screenshot.png;
VIDEO_DEBLUR_BROWSER_TIMEOUT sets the seconds allowed for one run (300); VIDEO_DEBLUR_CHROMIUM another Chromium.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from hub_helpers import REPO_ROOT

from pipeline_video_deblur.data import read_video

DEMO_DIR = REPO_ROOT / "examples" / "hub_demo"
CHROMIUM = os.environ.get("VIDEO_DEBLUR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START_TIMEOUT_S = 240
RUN_TIMEOUT_S = int(os.environ.get("VIDEO_DEBLUR_BROWSER_TIMEOUT", "300"))


def require_browser():
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium at {CHROMIUM}: install the Debian package `chromium` (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the Python package `playwright` is not installed (pip install playwright; no browser download)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def sample(sample_video) -> Path:
    return Path(os.environ.get("VIDEO_DEBLUR_BROWSER_SAMPLE", sample_video)).resolve()


@pytest.fixture
def demo_server(tiny_folder, sample, tmp_path):
    """The app in a subprocess on a free port (tiny pipeline, 2 steps unless overridden); yields its URL."""
    require_browser()
    port = free_port()
    model = os.environ.get("VIDEO_DEBLUR_BROWSER_MODEL", str(tiny_folder))
    if os.path.exists(model):
        model = str(Path(model).resolve())  # the app runs in tmp_path
    env = {
        **os.environ,
        "VIDEO_DEBLUR_MODEL": model,
        "VIDEO_DEBLUR_SAMPLE": str(sample),
        "VIDEO_DEBLUR_STEPS": os.environ.get("VIDEO_DEBLUR_BROWSER_STEPS", "2"),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115  (closed below)
    process = subprocess.Popen(
        [sys.executable, str(DEMO_DIR / "app.py")], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"the app exited with {process.returncode}:\n{(tmp_path / 'server.log').read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the app did not answer in {START_TIMEOUT_S} s:\n{(tmp_path / 'server.log').read_text()[-3000:]}"
                )
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_demo_in_chromium(demo_server, sample, tmp_path):
    from playwright.sync_api import sync_playwright

    expected = read_video(sample).frames.shape  # (F, H, W, 3)
    screenshot = tmp_path / "hub_demo.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(demo_server, wait_until="networkidle")

            # 1. Upload the sample through the page's own file input, then press Deblur
            uploaded = time.monotonic()
            page.locator("#input-video input[type=file]").set_input_files(str(sample))
            page.locator("#input-video video").wait_for(timeout=60_000)
            clicked = time.monotonic()
            page.locator("#deblur-button").click()

            # 2. Wait for the output video, the comparison and the time
            output = page.locator("#output-video video")
            output.wait_for(timeout=RUN_TIMEOUT_S * 1000)
            page.locator("#timing", has_text="Deblurred").wait_for(timeout=30_000)
            done = time.monotonic()
            src = output.get_attribute("src")
            assert src, "the output <video> has no src"
            page.locator("#comparison img").wait_for(timeout=30_000)
            timing = page.locator("#timing").inner_text()
            # The browser can play what it was given (H.264 in mp4): metadata loads, no media error.
            page.wait_for_function(
                "() => { const v = document.querySelector('#output-video video');"
                " return v && (v.error !== null || v.readyState >= 1); }",
                timeout=30_000,
            )
            media_error = page.evaluate("document.querySelector('#output-video video').error?.code ?? null")
            duration = page.evaluate("document.querySelector('#output-video video').duration")
            page.screenshot(path=str(screenshot), full_page=True)

            # 3. The served file is the deblurred clip: same frame count and size as the sample
            response = page.request.get(src if src.startswith("http") else demo_server.rstrip("/") + src)
            assert response.ok, f"GET {src} -> {response.status}"
            served = tmp_path / "served.mp4"
            served.write_bytes(response.body())
        finally:
            browser.close()

    print(f"\nscreenshot: {screenshot}")
    print(
        f"demo time: upload to result {done - uploaded:.1f} s (click to result {done - clicked:.1f} s); app: {timing}"
    )
    if os.environ.get("VIDEO_DEBLUR_SAVE_SCREENSHOT"):
        shutil.copyfile(screenshot, DEMO_DIR / "screenshot.png")
        print(f"copied to {DEMO_DIR / 'screenshot.png'}")
    assert media_error is None, f"Chromium cannot play the output video (MediaError code {media_error})"
    assert duration > 0
    assert read_video(served).frames.shape == expected
    assert f"Deblurred {expected[0]} frames of {expected[2]}x{expected[1]}" in timing
    assert Path(screenshot).stat().st_size > 10_000
