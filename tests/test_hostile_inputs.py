"""Hostile inputs and a hostile machine: a full or unwritable disk, a grid too large for memory,
non-finite or repeated grid values, a resume with nothing to do, a busy or damaged run
directory. Each gets one paragraph naming the value and the fix, and nothing already written
changes (every byte of the run directory, its lock file included)."""

import errno
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, compose_train, tiny_proxy
from omegaconf import OmegaConf

from bnrepro import atomic, lifecycle, mlp_members, rundir, tables, train_mlp, train_packed
from bnrepro.checkpoint import CheckpointError
from bnrepro.errors import ConfigError, ResumeError
from bnrepro.experiments import figure1
from bnrepro.hydra_callbacks import OutputDirCheck
from bnrepro.lifecycle import Run
from bnrepro.paths import data_dir
from bnrepro.rundir import DirectoryClaim, RunBusyError, RunWriteError
from bnrepro.tables import ResultsError
from bnrepro.train import train
from bnrepro.train_mlp import METRIC_COLUMNS, RESUME_KEYS

SHORT = ("model=mlp_bn", "seeds=[0,1]", "steps=100", "eval_every=50", "checkpoint_every=50")
NO_SPACE = os.strerror(errno.ENOSPC)


def every_byte(run_dir: Path) -> dict[str, bytes]:
    """Every file under a run directory, the lock file included, and its bytes."""
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


def cli(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bnrepro.train", *overrides, "device=cpu"],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def no_space(filename: str | None = None) -> OSError:
    return OSError(errno.ENOSPC, NO_SPACE, filename)


@pytest.fixture(scope="module")
def trained(small_cfg, tmp_path_factory) -> Path:
    """A short completed run, trained from Python once; tests take copies of it."""
    run_dir = tmp_path_factory.mktemp("trained")
    train(small_cfg(*SHORT), run_dir)
    return run_dir


@pytest.fixture
def finished(trained, tmp_path) -> Path:
    """A copy of `trained`, its lock file included, for a test to damage."""
    shutil.copytree(trained, tmp_path / "finished")
    return tmp_path / "finished"


# ------------------------------------------------------------------ a full or unwritable disk


def refuse_pwrite(*args) -> None:
    raise no_space()


def refuse_lock_file(self, lock: Path) -> None:
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(lock))


@pytest.mark.parametrize(
    ("target", "name", "refuse", "reason"),
    [
        (rundir.os, "pwrite", refuse_pwrite, NO_SPACE),
        (DirectoryClaim, "_take_lock", refuse_lock_file, os.strerror(errno.EACCES)),
    ],
    ids=["full disk", "no permission"],
)
def test_a_disk_that_refuses_the_claim_leaves_nothing(
    small_cfg, tmp_path, monkeypatch, target, name, refuse, reason
) -> None:
    monkeypatch.setattr(target, name, refuse)
    run_dir = tmp_path / "runs" / "new"
    with pytest.raises(RunWriteError) as caught:
        train(small_cfg(*SHORT), run_dir)
    monkeypatch.undo()
    message = str(caught.value)
    assert message.startswith(f"Could not write {run_dir / '.lock'}: {reason}. Nothing was")
    assert "Fix: free disk space" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == [], "the claim left a lock file or a directory"


@pytest.fixture
def full_disk(monkeypatch):
    """`fill()` makes every later atomic write (run.json, config.yaml, checkpoints) fail as a
    full disk does: its temporary file cannot be written."""
    mkstemp, full = atomic.tempfile.mkstemp, []

    def mkstemp_unless_full(*args, **kwargs):
        if full:
            raise no_space(kwargs.get("dir"))
        return mkstemp(*args, **kwargs)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp_unless_full)
    return lambda: full.append(True)


def test_a_full_disk_before_the_first_file_leaves_nothing(small_cfg, tmp_path, full_disk):
    full_disk()
    with pytest.raises(RunWriteError) as caught:
        train(small_cfg(*SHORT), tmp_path / "run")
    message = str(caught.value)
    assert message.startswith(f"Could not write {tmp_path / 'run' / 'config.yaml'}: {NO_SPACE}.")
    assert "it had no checkpoint yet. Fix: free disk space" in message
    assert list(tmp_path.iterdir()) == [], "the run left a lock file or a directory"


def test_a_disk_filling_mid_run_leaves_run_json_failed(small_cfg, tmp_path, monkeypatch, full_disk):
    save = torch.save

    def save_until_full(obj, f):
        if isinstance(obj, dict) and obj.get("step") == 100:
            full_disk()
            raise no_space(f.name)
        save(obj, f)

    monkeypatch.setattr(lifecycle.torch, "save", save_until_full)
    with pytest.raises(RunWriteError, match=f"{NO_SPACE}.*last checkpoint.*resume=true"):
        train(small_cfg(*SHORT), tmp_path)
    run = json.loads((tmp_path / "run.json").read_text())  # rewritten in place
    assert run["status"] == "failed" and NO_SPACE in run["error"]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 50
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_run_directory_the_disk_cannot_take_gets_one_paragraph(tmp_path, monkeypatch, capsys):
    def mkdir(self, *args, **kwargs):
        raise no_space(str(self))

    monkeypatch.setattr(Path, "mkdir", mkdir)
    config = OmegaConf.create({"hydra": {"run": {"dir": str(tmp_path / "a" / "b")}}})
    with pytest.raises(SystemExit) as caught:
        OutputDirCheck().on_run_start(config)
    assert caught.value.code == 2
    stderr = capsys.readouterr().err
    assert f"Could not write {tmp_path / 'a' / 'b'}: {NO_SPACE}. Nothing was run" in stderr
    assert "Fix: free disk space" in stderr
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ a grid too large for memory


def values(n: int) -> str:
    return "[" + ",".join(f"{0.001 * (i + 1):g}" for i in range(n)) + "]"


def test_a_grid_too_large_for_memory_is_refused_before_anything(small_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(mlp_members, "available_memory", lambda device: 8 * 10**9)
    cfg = small_cfg(
        "optim.weight_decay=0", f"grid.lr={values(100)}", f"grid.init_std={values(100)}"
    )
    with pytest.raises(ConfigError) as caught:
        train(cfg, tmp_path / "run")
    message = str(caught.value)
    assert "grid.lr (100) x grid.init_std (100) x seeds (1) = 10,000 members" in message
    assert "99,710 parameters each need about 16." in message
    assert "more than the 8.0 GB of memory available on cpu. Fix: train fewer members" in message
    assert not (tmp_path / "run").exists()


def test_a_grid_no_machine_holds_is_refused(small_cfg, tmp_path) -> None:
    cfg = small_cfg(
        "optim.weight_decay=0", f"grid.lr={values(1000)}", f"grid.init_std={values(1000)}"
    )
    with pytest.raises(ConfigError, match="1,000,000 members .* GB of memory available"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_pack_too_large_for_memory_is_refused_before_anything(tmp_path, monkeypatch):
    """A packed Inception run is refused before any member is built (building 10,000 took
    minutes, then the allocator failed)."""
    monkeypatch.setattr(train_packed, "available_memory", lambda device: 10**9)
    seeds = ",".join(map(str, range(100)))
    cfg = tiny_proxy("bn_x5", f"seeds=[{seeds}]", "grid.lr_multiplier=[1,5]")
    with pytest.raises(ConfigError) as caught:
        train(cfg, tmp_path / "run")
    message = str(caught.value)
    assert "grid.lr_multiplier (2) x seeds (100) = 200 members of 41,518 parameters" in message
    assert "each need about 4.3 GB (weights, gradients, momentum and the activations" in message
    assert "more than the 1.0 GB of memory available on cpu. Fix: train fewer members" in message
    assert not (tmp_path / "run").exists()


def test_a_pack_no_machine_holds_is_refused_at_once(tmp_path) -> None:
    """10,000 members at gpu_plateau's size: about 1.2 TB."""
    factors = "[" + ",".join(str(i + 1) for i in range(100)) + "]"
    cfg = tiny_proxy(
        "bn_x5", "data.size=32", "model.width=0.125", f"grid.lr_multiplier={factors}",
        f"grid.l2_divisor={factors}",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="10,000 members .* GB of memory available"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "model", ["model=mlp", "model=mlp_bn", "model=mlp_noisy", "model.bn_position=after"]
)
def test_the_memory_estimate_counts_every_parameter(small_cfg, model) -> None:
    cfg = train_mlp.validate(small_cfg("model=mlp_bn", model))
    net = mlp_members.build_model(cfg, torch.device("cpu"))
    state = net.state_dict()
    counted = sum(t.numel() for name, t in state.items() if "num_batches" not in name)
    assert mlp_members.parameter_count(cfg) == counted


# ------------------------------------------------------------------ grid values


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("grid.lr=[inf]", "grid.lr=[inf]. Each value of grid.lr must be a finite number"),
        ("grid.lr=[0.1,nan]", "grid.lr=[0.1, nan]. Each value of grid.lr must be a finite"),
        ("grid.init_std=[-inf]", "Each value of grid.init_std must be a finite number"),
        ("grid.lr=[-0.1]", "grid.lr=[-0.1]. Give a list of positive values"),
        ("grid.lr=[0]", "grid.lr=[0.0]. Give a list of positive values"),
        ("grid.lr=[]", "grid.lr=[]. An empty grid list trains nothing: give a list of one"),
        ("grid.lr=[0.1,0.1]", "grid.lr=[0.1, 0.1]. Give distinct values"),
        ("grid.init_std=[0.1,0.3,0.1]", "grid.init_std=[0.1, 0.3, 0.1]. Give distinct values"),
        ("grid.lr=abc", "grid.lr must be a list of numbers or null, e.g. grid.lr=[0.01,0.1,1.0]."),
        ("grid.lr=[[0.1]]", "e.g. grid.lr=[0.01,0.1,1.0]."),
        ("grid=5", "grid is a group of settings (lr, init_std), not one value"),
        ("seeds=[[0]]", "seeds must be a list of whole numbers, e.g. seeds=[0,1,2]."),
    ],
)
def test_bad_grid_values_are_refused_naming_them(small_cfg, tmp_path, override, expected) -> None:
    with pytest.raises(ConfigError) as caught:
        train(small_cfg("optim.weight_decay=0", override), tmp_path / "run")
    message = str(caught.value)
    assert message.startswith("Invalid config: ") and expected in message
    assert "?" not in message and "\n" not in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("grid.lr_multiplier=[]", "grid.lr_multiplier=[]. An empty grid list trains nothing"),
        ("grid.dropout_off=[]", "one or more values, e.g. grid.dropout_off=[false,true], or"),
        ("grid.lr_multiplier=[5,5]", "grid.lr_multiplier=[5.0, 5.0]. Give distinct values"),
    ],
)
def test_bad_pack_grid_values_are_refused_naming_them(tmp_path, override, expected) -> None:
    with pytest.raises(ConfigError) as caught:
        train(tiny_proxy("bn_x5", override), tmp_path / "run")
    message = str(caught.value)
    assert message.startswith("Invalid config: ") and expected in message
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ resume with nothing to do


@pytest.mark.parametrize(
    "overrides",
    [SHORT, ("model=mlp", "model.activation=relu", "optim.lr=1e6", "model.init_std=1")],
    ids=["completed", "every seed diverged"],
)
def test_resuming_a_finished_run_changes_no_byte(small_cfg, tmp_path, capsys, overrides) -> None:
    ended = train(small_cfg(*overrides), tmp_path)
    before = every_byte(tmp_path)
    capsys.readouterr()
    info = train(small_cfg(*overrides, "resume=true"), tmp_path)
    assert every_byte(tmp_path) == before
    assert info == json.loads(before["run.json"]) and info["status"] == ended["status"]
    assert info["overrides"] == [], "a run started from Python records no overrides"
    assert f"{tmp_path} has nothing left to train" in capsys.readouterr().out


def test_resuming_a_finished_inception_run_changes_no_byte(tmp_path) -> None:
    if not (data_dir() / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").exists():
        pytest.skip("Fashion-MNIST is not fetched")
    overrides = ["experiment=bn_x5", "data.size=16", "data.resize=bilinear", "model.width=0.0625",
                 "data.eval_size=200", "steps=2", "eval_every=2", "log_every=2", "device=cpu",
                 "logger.wandb.mode=disabled", f"data.root={data_dir()}"]  # fmt: skip
    cfg = compose_train(overrides)
    train(cfg, tmp_path)
    before = every_byte(tmp_path)
    info = train(compose_train([*overrides, "resume=true"]), tmp_path)
    assert every_byte(tmp_path) == before and info == json.loads(before["run.json"])


# ------------------------------------------------------------------ refused commands


def test_a_refused_command_leaves_no_directory(tmp_path) -> None:
    (tmp_path / "existing").mkdir()
    result = cli("steps=abc", f"hydra.run.dir={tmp_path / 'existing' / 'new' / 'run'}")
    assert result.returncode == 2 and "steps='abc'" in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in tmp_path.rglob("*")] == ["existing"]


@pytest.mark.parametrize("name", ["\u00e9t\u00e9", "a=b"], ids=["non-ASCII", "an equals sign"])
def test_an_override_hydra_cannot_read_gets_how_to_quote_it(tmp_path, name) -> None:
    run_dir = tmp_path / name
    result = cli("steps=1", f"hydra.run.dir={run_dir}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert message.startswith(f"bnrepro: Hydra cannot read the override 'hydra.run.dir={run_dir}'")
    assert message.endswith(f"single quotes for the shell: 'hydra.run.dir=\"{run_dir}\"'.")
    assert "\n" not in message and list(tmp_path.iterdir()) == []


def lock_state(run_dir: Path) -> tuple[bytes, int, int]:
    lock = run_dir / ".lock"
    return lock.read_bytes(), lock.stat().st_mtime_ns, lock.stat().st_ino


def test_a_busy_run_directory_keeps_its_lock(small_cfg, tmp_path, mnist_root) -> None:
    cfg = small_cfg(*SHORT)
    with Run(tmp_path, cfg, METRIC_COLUMNS, RESUME_KEYS):
        before = lock_state(tmp_path)
        for resume in ("resume=false", "resume=true"):
            with pytest.raises(RunBusyError, match=f"pid {os.getpid()}"):
                train(small_cfg(*SHORT, resume), tmp_path)
        result = cli(*SHORT, f"data.root={mnist_root}", f"hydra.run.dir={tmp_path}")
        assert result.returncode == 2 and "in use by another process" in result.stderr
        assert lock_state(tmp_path) == before
        assert [p.name for p in tmp_path.iterdir()] == [".lock"]


def test_a_refused_resume_leaves_the_lock_as_it_was(small_cfg, finished) -> None:
    before = every_byte(finished)
    with pytest.raises(ResumeError, match=r"optim\.lr=0\.1 \(now 0\.2\)"):
        train(small_cfg(*SHORT, "optim.lr=0.2", "resume=true"), finished)
    with pytest.raises(ResumeError, match="already holds a run"):
        train(small_cfg(*SHORT), finished)
    assert every_byte(finished) == before
    (finished / ".lock").unlink()  # a run copied without its lock file
    with pytest.raises(ResumeError, match="already holds a run"):
        train(small_cfg(*SHORT), finished)
    assert every_byte(finished) == {k: v for k, v in before.items() if k != ".lock"}


# ------------------------------------------------------------------ a damaged checkpoint


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:1000],
        lambda data: data[: len(data) // 2],
        lambda data: os.urandom(len(data)),
        lambda data: b"",
        lambda data: b"not a checkpoint\n" * 100,
    ],
    ids=["truncated", "half", "random bytes", "empty", "text"],
)
def test_a_damaged_checkpoint_gets_one_paragraph(small_cfg, finished, damage) -> None:
    checkpoint = finished / "checkpoint.pt"
    checkpoint.write_bytes(damage(checkpoint.read_bytes()))
    before = every_byte(finished)
    with pytest.raises(CheckpointError) as caught:
        train(small_cfg(*SHORT[:-2], "steps=200", "resume=true"), finished)
    message = str(caught.value)
    assert message.startswith(f"checkpoint.pt in {finished} cannot be read: ")
    assert "nothing was changed. Fix: train in a new directory" in message
    assert "\n" not in message and len(message) < 400
    assert every_byte(finished) == before


# ------------------------------------------------------------------ overrides


@pytest.mark.integration
def test_a_run_records_its_overrides_and_a_refused_resume_quotes_them(small_cfg, tmp_path):
    command = [*SHORT[:2], "steps=20", "eval_every=10", "probe.every=10", "probe.size=200"]
    data_root = small_cfg().data.root
    first = cli(*command, f"data.root={data_root}", f"hydra.run.dir={tmp_path}")
    assert first.returncode == 0, first.stderr
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["overrides"] == [*command, f"data.root={data_root}", "device=cpu"]
    before = every_byte(tmp_path)
    with pytest.raises(ResumeError) as caught:
        train(small_cfg(*command, "optim.lr=0.2", "resume=true"), tmp_path)
    message = str(caught.value)
    assert "optim.lr=0.1 (now 0.2)" in message
    assert "its run.json records them: model=mlp_bn 'seeds=[0,1]' steps=20 eval_every=10" in message
    assert f"hydra.run.dir={tmp_path} resume=true" in message
    again = cli(*command, f"data.root={data_root}", f"hydra.run.dir={tmp_path}", "resume=true")
    assert again.returncode == 0, again.stderr
    assert "nothing left to train" in again.stdout
    assert every_byte(tmp_path) == before


# ------------------------------------------------------------------ damaged results files


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty: it holds no CSV table, not even a header."),
        (
            b"step\n\x89PNG\x00\xff",
            "is not a CSV table: it holds bytes that are not text, from byte 5.",
        ),
        (b"step\n\xc3(\n", "is not a CSV table: it holds bytes that are not text, from byte 5."),
        (b"step,seed\n0,", "ends in the middle of a line (12 bytes): the file was cut short."),
    ],
    ids=["empty", "binary", "not UTF-8", "cut short"],
)
def test_a_damaged_csv_is_named_for_what_it_is(tmp_path, content, expected) -> None:
    path = tmp_path / "curves.csv"
    path.write_bytes(content)
    with pytest.raises(ResultsError) as caught:
        tables.read_csv(path, {"step": "int"}, "rebuild it")
    assert str(caught.value) == f"{path} {expected} Nothing was written. Fix: rebuild it."


def test_draw_of_an_empty_curves_csv_says_it_is_empty(tmp_path, capsys) -> None:
    for name in ("curves.csv", "summary.csv"):
        shutil.copy(REPO / "results" / "figure1" / name, tmp_path / name)
    (tmp_path / "curves.csv").write_bytes(b"")
    with pytest.raises(SystemExit) as caught:
        figure1.DRIVER.main(["draw", "--out", str(tmp_path)])
    assert caught.value.code == 2
    stderr = capsys.readouterr().err
    assert f"{tmp_path / 'curves.csv'} is empty: it holds no CSV table" in stderr
    assert "cut short" not in stderr and sorted(p.name for p in tmp_path.iterdir()) == [
        "curves.csv",
        "summary.csv",
    ]


# ------------------------------------------------------------------ benchmarks' options


def script(monkeypatch, name: str):
    """experiments/`name`.py as a module (the benchmarks import their neighbour bench.py)."""
    monkeypatch.syspath_prepend(str(REPO / "experiments"))
    spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("name", "argv", "expected"),
    [
        ("bench", ["--steps", "0"], "--steps 0 is not a number of harness steps"),
        ("bench", ["--steps", "-5"], "--steps -5 is not a number of harness steps"),
        (
            "bench",
            ["--grid-steps", "x"],
            "--grid-steps x is not a number of steps of the 48 members",
        ),
        ("bench_inception", ["--steps", "-1"], "--steps -1 is not a number of steps per timing"),
        ("bench_inception", ["--threads", "0"], "--threads 0 is not a number of CPU threads"),
        ("bench_packed", ["--repeats", "0"], "--repeats 0 is not a number of timings"),
        ("bench_norm", ["--repeats", "-1"], "--repeats -1 is not a number of timings"),
        ("bench_loader", ["--images", "0"], "--images 0 is not a number of timed images"),
        (
            "bench_loggers",
            ["--repeats", "0"],
            "--repeats 0 is not a number of timed runs of each setting",
        ),
    ],
)
def test_a_benchmark_refuses_a_bad_count_before_anything(monkeypatch, capsys, name, argv, expected):
    main = script(monkeypatch, name).main
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *argv])
    with pytest.raises(SystemExit) as caught:
        main()
    assert caught.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"bnrepro: {expected}: it takes a whole number above 0.")
    assert "Nothing was run or written. Fix: e.g. " in captured.err and captured.out == ""
