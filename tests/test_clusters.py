"""Clusters: a requeued batch job resumes its own run (and no other), SLURM's variables stand
for torchrun's under srun, the MLP refuses to start as several processes; and, as integration
tests, a timeout under submitit's local executor requeued and resumed byte-identically, and
DDP on two CPU processes started with the variables srun sets."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, stop_at

from bnrepro.errors import ConfigError, ResumeError
from bnrepro.lifecycle import Interrupted
from bnrepro.replicas import first_host, process_group
from bnrepro.train import train

JOB_VARIABLES = ("SLURM_JOB_ID", "SLURM_RESTART_COUNT", "SUBMITIT_LOCAL_JOB_ID")
RUN = ("model=mlp_bn", "seeds=[0]", "steps=60", "eval_every=20", "probe.every=10",
       "checkpoint_every=20")  # fmt: skip


@pytest.fixture
def no_job(monkeypatch):
    """The process in no batch job, whatever runs the tests."""
    for name in JOB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def files(run_dir) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


# --------------------------------------------------------------------------- requeued jobs


def test_a_requeued_job_resumes_its_own_run_and_no_other(small_cfg, no_job, tmp_path):
    """SIGUSR2 (SLURM's warning before the time limit) stops the run with a checkpoint; the
    same job, started again without resume=true, resumes it to the uninterrupted run's bytes.
    Another job, or no job, is refused and changes nothing."""
    train(small_cfg(*RUN), tmp_path / "straight")
    no_job.setenv("SLURM_JOB_ID", "4242")
    with no_job.context() as patch:
        stop_at(patch, 30, lambda: os.kill(os.getpid(), signal.SIGUSR2))
        with pytest.raises(Interrupted) as caught:
            train(small_cfg(*RUN), tmp_path / "run")
    assert caught.value.exit_code == 128 + signal.SIGUSR2
    segment = json.loads((tmp_path / "run" / "run.json").read_text())["segments"][-1]
    assert (segment["job"], segment["signal"], segment["to_step"]) == ("slurm 4242", "SIGUSR2", 30)
    before = files(tmp_path / "run")
    for job in ("4243", None):
        if job is None:
            no_job.delenv("SLURM_JOB_ID")
        else:
            no_job.setenv("SLURM_JOB_ID", job)
        with pytest.raises(ResumeError, match="already holds a run"):
            train(small_cfg(*RUN), tmp_path / "run")
        assert files(tmp_path / "run") == before
    no_job.setenv("SLURM_JOB_ID", "4242")
    info = train(small_cfg(*RUN), tmp_path / "run")
    assert info["status"] == "completed" and info["resumed_from_step"] == 30
    assert [s["job"] for s in info["segments"]] == ["slurm 4242", "slurm 4242"]
    straight = tmp_path / "straight" / "metrics.csv"
    assert (tmp_path / "run" / "metrics.csv").read_bytes() == straight.read_bytes()


def test_a_job_slurm_restarted_resumes_its_crashed_run(small_cfg, no_job, tmp_path):
    """A job SLURM requeued itself (preemption, a node failure: SLURM_RESTART_COUNT >= 1)
    resumes the run it left without a signal; the same job not restarted is refused."""

    class Crash(Exception):
        pass

    def crash():
        raise Crash

    no_job.setenv("SLURM_JOB_ID", "77")
    with no_job.context() as patch:
        stop_at(patch, 50, crash)
        with pytest.raises(Crash):
            train(small_cfg(*RUN), tmp_path)
    with pytest.raises(ResumeError, match="already holds a run"):
        train(small_cfg(*RUN), tmp_path)
    no_job.setenv("SLURM_RESTART_COUNT", "1")
    info = train(small_cfg(*RUN), tmp_path)
    assert info["status"] == "completed" and info["resumed_from_step"] == 40


# --------------------------------------------------------------------------- srun as torchrun


def test_torchrun_variables_are_kept_as_they_are() -> None:
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "n1",
           "MASTER_PORT": "29400", "SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5"}  # fmt: skip
    assert process_group(env) == {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                      "MASTER_ADDR", "MASTER_PORT")}  # fmt: skip


def test_srun_tasks_map_to_torchrun_variables() -> None:
    env = {"SLURM_STEP_NUM_TASKS": "16", "SLURM_NTASKS": "16", "SLURM_PROCID": "9",
           "SLURM_LOCALID": "1", "SLURM_STEP_NODELIST": "gpu[007-008]",
           "SLURM_JOB_NODELIST": "gpu[007-008]", "SLURM_JOB_ID": "1234567"}  # fmt: skip
    assert process_group(env) == {"RANK": "9", "WORLD_SIZE": "16", "LOCAL_RANK": "1",
                                  "MASTER_ADDR": "gpu007", "MASTER_PORT": "19567"}  # fmt: skip
    chosen = process_group({**env, "MASTER_ADDR": "head", "MASTER_PORT": "23456"})
    assert (chosen["MASTER_ADDR"], chosen["MASTER_PORT"]) == ("head", "23456")


@pytest.mark.parametrize(
    "env",
    [
        {},
        # submitit's default job: srun with one task.
        {"SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"},
        # A batch script of 8 tasks running python itself, without srun: one process.
        {"SLURM_NTASKS": "8", "SLURM_PROCID": "0", "SLURM_JOB_NODELIST": "n[1-2]"},
    ],
)
def test_one_task_is_one_process(env) -> None:
    assert process_group(env) == {}


@pytest.mark.parametrize(
    ("nodelist", "first"),
    [
        ("node1", "node1"),
        ("node[1-4]", "node1"),
        ("gpu[007-009,012],cpu3", "gpu007"),
        ("gpu-a100-[3,5-6]", "gpu-a100-3"),
        ("rack[2-3]-node[10-11]", "rack2-node10"),
        ("a,b[1-2]", "a"),
    ],
)
def test_first_host_of_a_nodelist(nodelist, first) -> None:
    assert first_host(nodelist) == first


# --------------------------------------------------------------------------- the MLP


@pytest.mark.parametrize(
    "env",
    [
        {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"},  # torchrun --nproc-per-node=2
        {
            "SLURM_STEP_NUM_TASKS": "2",
            "SLURM_PROCID": "0",
            "SLURM_LOCALID": "0",
            "SLURM_STEP_NODELIST": "localhost",
        },  # srun --ntasks=2
    ],
    ids=["torchrun", "srun"],
)
def test_the_mlp_refuses_to_start_as_several_processes(small_cfg, monkeypatch, tmp_path, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        train(small_cfg("model=mlp_bn"), tmp_path / "run")
    message = str(caught.value)
    assert "runs as one process" in message and "one of 2" in message
    assert "Nothing was run or written" in message and "hydra/launcher=joblib" in message
    assert "\n" not in message and not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- integration

SUBMITIT_RUN = ["model=mlp_bn", "seeds=[0]", "steps=800", "eval_every=200", "probe.every=100",
                "probe.size=200", "checkpoint_every=200", "device=cpu",
                "logger.wandb.mode=disabled"]  # fmt: skip


def plain(value):
    """`value` with every tensor as its dtype, shape and bytes: comparable with ==."""
    if isinstance(value, torch.Tensor):
        return str(value.dtype), tuple(value.shape), value.numpy().tobytes()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def checkpoint_contents(path) -> dict:
    """checkpoint.pt's contents less the two entries that differ between any two runs of one
    config: the wall-clock seconds, and the state of torch's global generator, which each
    process starts at a seed of its own and the MLP never draws from (it is saved so that a
    resumed process continues with it)."""
    state = torch.load(path, weights_only=False)
    del state["wall_s"], state["trainer"]["torch_rng"]
    return plain(state)


@pytest.mark.integration
def test_a_timeout_under_submitit_requeues_and_resumes_byte_identically(
    small_cfg, no_job, tmp_path
) -> None:
    """A sweep job of submitit's local executor gets SIGUSR2 after its rows of step 100, as
    SLURM sends it before the time limit (and the local executor at its own timeout): the run
    checkpoints and stops, submitit requeues the job, the job resumes the run, and the run
    ends with the uninterrupted run's metrics.csv, model.pt and checkpoint contents."""
    straight_cfg = small_cfg(*SUBMITIT_RUN)
    train(straight_cfg, tmp_path / "straight")
    sweep = tmp_path / "sweep"
    process = subprocess.Popen(
        [sys.executable, "-m", "bnrepro.train", "-m", "hydra/launcher=submitit_local",
         "hydra.launcher.timeout_min=5", f"hydra.sweep.dir={sweep}", *SUBMITIT_RUN,
         f"data.root={straight_cfg.data.root}"],  # the straight run's, whatever BNREPRO_DATA is
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    run_dir, metrics = sweep / "0_bn", sweep / "0_bn" / "metrics.csv"
    deadline = time.time() + 300
    while not (metrics.exists() and "\n100," in metrics.read_text()):
        assert time.time() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.02)
    os.kill(json.loads((run_dir / "run.json").read_text())["pid"], signal.SIGUSR2)
    out, err = process.communicate(timeout=600)
    logs = "".join(p.read_text() for p in sorted(sweep.glob(".submitit/*/*_log.*")))
    assert process.returncode == 0, err[-3000:] + logs[-3000:]
    assert "Requeued job" in logs and "SIGUSR2 stopped the run at step" in logs
    info = json.loads((run_dir / "run.json").read_text())
    first, second = info["segments"]
    assert first["signal"] == "SIGUSR2" and first["job"] == second["job"]
    assert first["job"].startswith("submitit-local ") and 100 <= first["to_step"] < 800
    assert info["status"] == "completed" and second["from_step"] == first["to_step"]
    straight = tmp_path / "straight"
    for name in ("metrics.csv", "model.pt"):
        assert (run_dir / name).read_bytes() == (straight / name).read_bytes(), name
    expected = checkpoint_contents(straight / "checkpoint.pt")
    assert checkpoint_contents(run_dir / "checkpoint.pt") == expected


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
def test_ddp_on_two_cpu_processes_started_as_srun_starts_them(fashion_root, tmp_path):
    """Two processes with only the variables srun sets for a step of two tasks (no torchrun)
    train one Inception run together with Gloo."""
    run_dir = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "bnrepro.train", "experiment=inception", "model.width=0.0625",
        "data.size=16", "data.resize=bilinear", "data.eval_size=200", "device=cpu",
        "logger.wandb.mode=disabled", "steps=2", "log_every=1", "eval_every=2", "batch_size=4",
        f"data.root={fashion_root}", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WORLD_SIZE"))}
    slurm = {"SLURM_JOB_ID": "5", "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS": "2",
             "SLURM_STEP_NODELIST": "localhost", "MASTER_PORT": str(free_port())}  # fmt: skip
    processes = [
        subprocess.Popen(
            command,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**base, **slurm, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
        )  # fmt: skip
        for rank in (0, 1)
    ]
    results = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-2000:] for _, err in results]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["world_size"] == 2
    assert info["segments"][0]["job"] == "slurm 5"
