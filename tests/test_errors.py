"""Bad input from the command line: one clear paragraph naming the value and the fix, no
traceback, and nothing already written is lost."""

import json
import subprocess
import sys

import pytest
from conftest import REPO


def run_cli(*overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bnrepro.train", *overrides, "device=cpu"],
        cwd=REPO, capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["optim.lrr=0.1"], "Could not override 'optim.lrr'"),
        (["experiment=nope"], "Could not find 'experiment/nope'"),
        (["steps=abc"], "steps='abc'. steps must be a whole number"),
        (["optim.lr=-0.1"], "optim.lr=-0.1. Use a positive learning rate"),
        (["model=mlp_bn", "batch_size=1"], "batch_size=1. Use batch_size >= 2"),
        (["model.activation=tanh"], "model.activation='tanh'"),
        (["seeds=[0,0]"], "seeds=[0, 0]"),
    ],
)
def test_bad_overrides_name_the_value_without_a_traceback(tmp_path, overrides, expected) -> None:
    result = run_cli(*overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_data_without_download_names_the_file_and_fix(tmp_path) -> None:
    result = run_cli(f"data.root={tmp_path / 'empty'}", "data.download=false",
                     f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert result.returncode == 2
    assert "train-images-idx3-ubyte" in result.stderr and "Fix" in result.stderr
    assert "Traceback" not in result.stderr
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "failed" and "train-images-idx3-ubyte" in run["error"]


def test_checksum_mismatch_keeps_the_users_file(tmp_path, mnist_root) -> None:
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in (mnist_root / "MNIST" / "raw").iterdir():
        (raw / path.name).write_bytes(path.read_bytes())
    labels = raw / "t10k-labels-idx1-ubyte"
    damaged = bytearray(labels.read_bytes())
    damaged[-1] ^= 1
    labels.write_bytes(bytes(damaged))
    result = run_cli(f"data.root={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert "t10k-labels-idx1-ubyte" in result.stderr and "md5" in result.stderr
    assert "Traceback" not in result.stderr
    assert labels.read_bytes() == bytes(damaged)


def test_unwritable_output_dir_is_refused_before_anything_runs(tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    result = run_cli("steps=10", f"hydra.run.dir={blocker / 'run'}")
    assert result.returncode == 2
    assert f"hydra.run.dir={blocker / 'run'}" in result.stderr and "a file" in result.stderr
    assert "Traceback" not in result.stderr
    assert blocker.read_text() == "keep me"


def test_one_bad_job_does_not_stop_a_sweep(tmp_path, mnist_root) -> None:
    result = run_cli(
        "-m", "model=mlp_bn", "batch_size=1,60", "steps=20", "eval_every=10", "probe.every=10",
        f"data.root={mnist_root}", f"hydra.sweep.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    statuses = sorted(json.loads(path.read_text())["status"] for path in tmp_path.rglob("run.json"))
    assert statuses == ["completed", "failed"]
    assert "batch_size=1" in result.stderr
