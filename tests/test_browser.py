"""Drive the running dashboard in headless Chromium: upload a two-image study, then History.

Screenshots go to test-artifacts/ (ignored by git) for a person to look at.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import ROOT, png_bytes, synthetic_radiograph

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
START_TIMEOUT_S = 180
RESULT_TIMEOUT_MS = 180_000

pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(evaluated_bundle, tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); .ci/run installs it")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
    port = free_port()
    data_dir = tmp_path_factory.mktemp("browser-var")
    env = {
        **os.environ,
        "BONESENTINEL_BUNDLE": str(evaluated_bundle),
        "BONESENTINEL_DATA_DIR": str(data_dir),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    env.pop("BONESENTINEL_DATABASE_URL", None)
    log = open(data_dir / "streamlit.log", "w")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "dashboard/app.py",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + START_TIMEOUT_S
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"streamlit did not start within {START_TIMEOUT_S} s; see {data_dir / 'streamlit.log'}")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_upload_two_images_then_history(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    files = []
    for seed in (11, 12):
        path = tmp_path / f"view{seed}.png"
        path.write_bytes(png_bytes(synthetic_radiograph(256, 200, seed=seed)))
        files.append(str(path))

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server, wait_until="domcontentloaded")
        page.get_by_text("Analyze a study").first.wait_for(timeout=RESULT_TIMEOUT_MS)
        page.locator('input[type="file"]').first.set_input_files(files)
        page.get_by_text("view12.png").first.wait_for(timeout=30_000)
        page.get_by_role("button", name="Analyze study").click()
        page.get_by_text("Logged as study #1").wait_for(timeout=RESULT_TIMEOUT_MS)
        expect(page.get_by_text("Probability abnormal")).to_have_count(2)
        expect(page.get_by_text("Study score (mean of 2 images)")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "analyze.png"), full_page=True)

        page.get_by_role("link", name="History").click()
        page.get_by_text("Prediction history").wait_for(timeout=60_000)
        studies = page.get_by_test_id("stMetric").filter(has_text="Studies")
        expect(studies).to_contain_text("1")
        page.screenshot(path=str(ARTIFACTS / "history.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "analyze.png").stat().st_size > 10_000
