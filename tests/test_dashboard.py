"""`make dashboard`: TensorBoard serves a run's scalars, and the page renders in a real browser.

A short run logged with `logger.tensorboard=true` is served by `tensorboard --logdir ...
--host 127.0.0.1` on a free loopback port. Its JSON API must list the run's seed as a run of
its own with the run's scalar tags and the values of metrics.csv, and the seed's
hyperparameters and final test accuracy in the HParams view; headless Chromium must render
the TensorBoard app with the run and its tags. Nothing leaves the machine: TensorBoard listens
on loopback only, every request bypasses proxies, and Chromium runs with its background
networking off.

Chromium is Debian's `chromium` (`make browser` installs it, as root); the browser test is
skipped when it is missing.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import compose_train
from omegaconf import open_dict
from PIL import Image  # Pillow is a dependency of matplotlib

from bnrepro.train import train

pytestmark = pytest.mark.integration

METRICS = ("train_loss", "test_acc", "p15", "p50", "p85")
RUN_NAME = "run/tensorboard/seed_0"  # the seed's event folder, relative to --logdir
STARTUP_TIMEOUT_S = 60
CHROMIUM_TIMEOUT_S = 40
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1400,1000",
    # Virtual time runs on while the page's requests are answered, so the dumped DOM and the
    # screenshot show the app after it has fetched and drawn the run's scalars.
    "--virtual-time-budget=10000",
)
TENSORBOARD_ORANGE = (245, 124, 0)  # the app's header bar, #f57c00

# Loopback requests must never go through an http_proxy from the environment.
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_json(url: str) -> Any:
    with LOOPBACK.open(url, timeout=5) as response:
        return json.load(response)


def post_json(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with LOOPBACK.open(request, timeout=10) as response:
        return json.load(response)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    """Kills `process` and the processes it started (TensorBoard's data server, Chromium's
    helpers): each was started in a session of its own, so its process group is exactly those."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium executable on PATH; skips the test when there is none."""
    found = find_chromium()
    if not found:
        pytest.skip(
            "Chromium is not installed (neither chromium nor chromium-browser is on "
            "PATH); `make browser`, as root, installs Debian's chromium"
        )
    return found


@dataclass
class Dashboard:
    url: str
    run_dir: Path


def tensorboard_command() -> list[str]:
    """The venv's `tensorboard` script, the one `make dashboard` runs."""
    script = Path(sys.executable).with_name("tensorboard")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tensorboard.main"]


def wait_for_run(url: str, process: subprocess.Popen, log: Path) -> None:
    """Returns once the server lists the run's scalar tags; fails (with its log) otherwise."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"tensorboard exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError, ValueError):
            if get_json(f"{url}/data/plugin/scalars/tags").get(RUN_NAME):
                return
        time.sleep(0.5)
    pytest.fail(
        f"tensorboard did not list {RUN_NAME} within {STARTUP_TIMEOUT_S} s:\n{log.read_text()}"
    )


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory, mnist_root) -> Iterator[Dashboard]:
    """TensorBoard on a free loopback port, serving one short run (seed 0, 60 steps)."""
    logdir = tmp_path_factory.mktemp("runs")
    cfg = compose_train(
        ["steps=60", "eval_every=30", "probe.every=30", "probe.size=200", "device=cpu",
         "logger.wandb.mode=disabled", "logger.tensorboard=true", f"data.root={mnist_root}"]
    )  # fmt: skip
    with open_dict(cfg):
        cfg.pop("hydra", None)
    run_dir = logdir / "run"
    train(cfg, run_dir)

    port = free_loopback_port()
    log = tmp_path_factory.mktemp("tensorboard") / "tensorboard.log"
    command = [*tensorboard_command(), "--logdir", str(logdir), "--host", "127.0.0.1"]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_run(url, process, log)
        yield Dashboard(url, run_dir)
    finally:
        stop(process)


def test_api_lists_the_run_and_serves_its_curves(dashboard) -> None:
    tags = get_json(f"{dashboard.url}/data/plugin/scalars/tags")
    assert set(tags) == {RUN_NAME}
    assert set(tags[RUN_NAME]) == set(METRICS)

    query = urllib.parse.urlencode({"run": RUN_NAME, "tag": "test_acc"})
    points = get_json(f"{dashboard.url}/data/plugin/scalars/scalars?{query}")
    logged = pd.read_csv(dashboard.run_dir / "metrics.csv").dropna(subset=["test_acc"])
    assert [step for _, step, _ in points] == logged.step.tolist() == [0, 30, 60]
    assert [value for _, _, value in points] == pytest.approx(logged.test_acc.tolist(), rel=1e-6)


def test_hparams_view_lists_the_seed_with_its_final_accuracy(dashboard) -> None:
    """The HParams plugin's API (what its table shows): one session, the seed's run, with its
    hyperparameters and, as its test_acc metric, the run's final test accuracy."""
    statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
    request = {"experimentName": "", "allowedStatuses": statuses, "colParams": [],
               "startIndex": 0, "sliceSize": 10}  # fmt: skip
    groups = post_json(f"{dashboard.url}/data/plugin/hparams/session_groups", request)
    (group,) = groups["sessionGroups"]
    assert group["name"] == RUN_NAME
    assert group["hparams"]["seed"] == 0 and group["hparams"]["model.variant"] == "plain"
    assert group["hparams"]["optim.lr"] == pytest.approx(0.1)
    assert [session["status"] for session in group["sessions"]] == ["STATUS_SUCCESS"]
    metrics = {m["name"]["tag"]: m for m in group["metricValues"]}
    final = pd.read_csv(dashboard.run_dir / "metrics.csv").dropna(subset=["test_acc"]).iloc[-1]
    assert metrics["test_acc"]["trainingStep"] == final.step == 60
    assert metrics["test_acc"]["value"] == pytest.approx(final.test_acc, rel=1e-6)


class RenderedPage(HTMLParser):
    """What the browser test reads from a DOM dumped by Chromium: element names, the <title>,
    visible text, the plugin of the selected tab and the titles of the tag groups."""

    def __init__(self, html: str):
        super().__init__()
        self.elements: set[str] = set()
        self.title = ""
        self.active_plugin: str | None = None
        self.group_titles: set[str] = set()
        self._text: list[str] = []
        self._open: list[str] = []
        self._in_selected_tab = False
        self.feed(html)
        self.close()

    @property
    def text(self) -> str:
        return " ".join(" ".join(self._text).split())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.elements.add(tag)
        if tag in ("title", "script", "style"):
            self._open.append(tag)
        if attributes.get("role") == "tab":
            self._in_selected_tab = attributes.get("aria-selected") == "true"
        if self._in_selected_tab and attributes.get("data-plugin-id"):
            self.active_plugin = self.active_plugin or attributes["data-plugin-id"]
        if "group-title" in (attributes.get("class") or "").split() and attributes.get("title"):
            self.group_titles.add(attributes["title"])

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if not self._open:
            self._text.append(data)
        elif self._open[-1] == "title":
            self.title += data


def run_chromium(chromium: str, profile: Path, *args: str) -> str:
    """Runs headless Chromium with `args`; returns its stdout. The whole process group is
    killed afterwards, so no renderer or zygote outlives the test."""
    process = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=CHROMIUM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium {' '.join(args)} did not finish in {CHROMIUM_TIMEOUT_S} s")
    finally:
        stop(process)
    assert process.returncode == 0, f"chromium {' '.join(args)} failed:\n{stderr[-2000:]}"
    return stdout


def test_chromium_renders_the_run_in_the_dashboard(dashboard, chromium, tmp_path) -> None:
    """The scalars page is the TensorBoard app with its scalars tab selected (its charts live
    in shadow DOM, which --dump-dom leaves out, so the screenshot shows them); the Time Series
    page, rendered in the light DOM, names the run and a group for every logged metric."""
    profile = tmp_path / "chromium-profile"

    scalars = RenderedPage(
        run_chromium(chromium, profile, "--dump-dom", f"{dashboard.url}/#scalars")
    )
    assert scalars.title.strip() == "TensorBoard"
    assert "tb-webapp" in scalars.elements
    assert scalars.active_plugin == "scalars"

    series = RenderedPage(
        run_chromium(chromium, profile, "--dump-dom", f"{dashboard.url}/#timeseries")
    )
    assert series.active_plugin == "timeseries"
    assert RUN_NAME in series.text
    assert series.group_titles >= set(METRICS), series.group_titles

    screenshot = tmp_path / "scalars.png"
    run_chromium(chromium, profile, f"--screenshot={screenshot}", f"{dashboard.url}/#scalars")
    with Image.open(screenshot) as image:
        rgb = image.convert("RGB")
        assert rgb.size == (1400, 1000)
        header = [rgb.getpixel((x, 5)) for x in range(0, rgb.width, 50)]
        body = {rgb.getpixel((x, y)) for x in range(0, rgb.width, 25) for y in range(80, 1000, 25)}
    assert all(pixel == TENSORBOARD_ORANGE for pixel in header), f"no header bar: {screenshot}"
    assert len(body) > 5, f"the dashboard below the header is blank: {screenshot}"
