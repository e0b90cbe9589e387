"""Dashboard start-up: from ``streamlit run`` to a usable Analyze page with the model loaded.

Headless Chromium (Playwright) is launched first, so its own start-up is not counted. Then the
clock starts and ``python -m streamlit run dashboard/app.py --server.headless true`` is started
(``BONESENTINEL_DATA_DIR`` = a temporary folder). Measured, in seconds from process start:

* health     -- ``/_stcore/health`` answers 200 (the server is up; nothing is loaded yet);
* first page -- the first browser session shows "Analyze a study" *and* the file uploader.
  The page writes its title, then loads the predictor through ``st.cache_resource``
  (TensorFlow import, bundle verification, model load, warm-up trace) and only then draws the
  uploader, so a visible uploader means the model is loaded and ready;
* second session -- a new browser context (a new Streamlit session) opening the same page,
  timed from its navigation: the model is cached per process, so this should be far faster.

Model: ``--bundle DIR``, else the bundled default, else a random-weight bundle at
``--input-size`` built in a temporary folder before the clock starts (weights do not change
the timing). ``--repeats N`` restarts the server N times and reports medians.

The last line printed is one JSON object with every figure.

    .venv/bin/python benchmarks/startup.py [--repeats 3] [--bundle DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
APP = "dashboard/app.py"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"]
DEFAULT_INPUT_SIZE = 128
DEFAULT_TIMEOUT_S = 300
HEALTH_POLL_S = 0.1
PAGE_TITLE = "Analyze a study"
MODEL_ERROR = "The model could not be loaded"
UPLOADER_TEST_ID = "stFileUploader"
LOG_TAIL_CHARS = 3000
RANDOM_SEED = 1234


@dataclass(frozen=True)
class Startup:
    health_s: float
    first_page_s: float
    first_page_after_health_s: float
    second_session_s: float


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=1, help="server starts to time (median reported)")
    p.add_argument("--bundle", help="model bundle directory (default: the bundled model, else random weights)")
    p.add_argument(
        "--input-size", type=int, default=DEFAULT_INPUT_SIZE, help="input size of the random-weight fallback model"
    )
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for each stage")
    p.add_argument("--chromium", default=CHROMIUM, help=f"Chromium executable (default {CHROMIUM})")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.timeout <= 0:
        p.error("--repeats and --timeout must be positive")
    return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def random_bundle(input_size: int, directory: str | Path) -> Path:
    """A random-weight bundle, built in a child process so this one never imports TensorFlow."""
    path = Path(directory) / f"random-{input_size}"
    code = (
        "import keras, sys\n"
        "from core.bundle import new_card, save_bundle\n"
        "from core.model import build_model\n"
        f"keras.utils.set_random_seed({RANDOM_SEED})\n"
        f"card = new_card(name='benchmark-random', version='0.0.0', input_size={input_size},\n"
        "    training_data={'name': 'none (random weights)', 'credit': 'n/a', 'licence': 'n/a'},\n"
        "    intended_use='benchmarks only', limitations=['random weights: for timing only'])\n"
        f"save_bundle(build_model({input_size}, weights=None), card, sys.argv[1])\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, cwd=REPO_ROOT, env=env)
    return path


def resolve_bundle(args: argparse.Namespace, workdir: str) -> tuple[Path | None, str]:
    """The bundle to serve (None: the default one, no variable needed) and how it was chosen."""
    from core.bundle import CARD_FILE, DEFAULT_BUNDLE_DIR

    if args.bundle:
        return Path(args.bundle).resolve(), f"bundle {args.bundle}"
    if (DEFAULT_BUNDLE_DIR / CARD_FILE).is_file():
        return None, f"default bundle {DEFAULT_BUNDLE_DIR}"
    return random_bundle(args.input_size, workdir), f"random-weight EfficientNetB0 at {args.input_size}"


def start_server(port: int, data_dir: Path, bundle: Path | None, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "BONESENTINEL_DATA_DIR": str(data_dir)}
    env.pop("BONESENTINEL_DATABASE_URL", None)
    if bundle is not None:
        env["BONESENTINEL_BUNDLE"] = str(bundle)
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        APP,
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--browser.gatherUsageStats",
        "false",
    ]
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for_health(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with status {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(HEALTH_POLL_S)
    raise TimeoutError(f"no healthy server at {url} within {timeout_s:.0f} s")


def open_analyze_page(browser, url: str, timeout_s: float) -> float:
    """Open the app in a new session; seconds until the title and the file uploader are visible."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    timeout_ms = timeout_s * 1000
    try:
        start = time.perf_counter()
        page.goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
        page.get_by_text(PAGE_TITLE).first.wait_for(state="visible", timeout=timeout_ms)
        ready = page.get_by_test_id(UPLOADER_TEST_ID).or_(page.get_by_text(MODEL_ERROR)).first
        ready.wait_for(state="visible", timeout=timeout_ms)
        elapsed = time.perf_counter() - start
        if page.get_by_text(MODEL_ERROR).count():
            raise RuntimeError(
                f"the dashboard could not load the model: {page.get_by_text(MODEL_ERROR).first.inner_text()}"
            )
        return elapsed
    finally:
        context.close()


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure_once(browser, bundle: Path | None, timeout_s: float) -> Startup:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="bonesentinel-startup-") as data_dir:
        log_path = Path(data_dir) / "streamlit.log"
        start = time.perf_counter()
        proc = start_server(port, Path(data_dir), bundle, log_path)
        try:
            wait_for_health(url, proc, timeout_s)
            health_s = time.perf_counter() - start
            open_analyze_page(browser, url, timeout_s)
            first_page_s = time.perf_counter() - start
            second_session_s = open_analyze_page(browser, url, timeout_s)
        except Exception:
            tail = log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:] if log_path.exists() else ""
            print(f"--- streamlit log (tail) ---\n{tail}", file=sys.stderr)
            raise
        finally:
            stop_server(proc)
    return Startup(health_s, first_page_s, first_page_s - health_s, second_session_s)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(args.chromium).exists():
        print(f"error: Chromium not found at {args.chromium} (apt-get install chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    results = []
    with tempfile.TemporaryDirectory(prefix="bonesentinel-startup-bundle-") as workdir:
        bundle, model_note = resolve_bundle(args, workdir)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            try:
                for k in range(args.repeats):
                    results.append(measure_once(browser, bundle, args.timeout))
                    print(f"start {k + 1}: {asdict(results[-1])}", file=sys.stderr)
            finally:
                browser.close()

    medians = {key: round(statistics.median(getattr(r, key) for r in results), 2) for key in asdict(results[0])}
    result = {**medians, "repeats": args.repeats, "model": model_note, "cpus": os.cpu_count()}
    print(f"Model     {model_note}")
    print(f"Starts    {args.repeats} (medians), {result['cpus']} CPUs\n")
    print(f"{'stage':<52} {'seconds':>8}")
    print(f"{'process start → /_stcore/health answers':<52} {result['health_s']:>8.2f}")
    print(f"{'process start → first page usable (model loaded)':<52} {result['first_page_s']:>8.2f}")
    print(f"{'  of which after health (page + model load)':<52} {result['first_page_after_health_s']:>8.2f}")
    print(f"{'second browser session → page usable':<52} {result['second_session_s']:>8.2f}\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
