"""bnrepro.campaign: the committed plan's lengths follow its rule; a plan is checked before
anything trains; a campaign trains from its commit's clone, resumes what a stop interrupted,
never retrains what ended, records each segment's hardware and copies each ended run's record."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import compose_train

from bnrepro.campaign import (
    RECORD_FILES,
    Campaign,
    RunState,
    main,
    makespan,
    next_run,
    run_state,
    seconds_left,
    step_seconds,
)
from bnrepro.campaign_plan import CampaignError, PlannedRun, load_plan
from bnrepro.paths import data_dir

REPO = Path(__file__).resolve().parents[1]
PLAN = REPO / "experiments" / "campaigns" / "figure2_cpu_plateau.yaml"


def test_the_committed_plan_follows_its_length_rule():
    """Every Figure 3 run and every rung of the recipe trains 180 of its own decays; the
    ladder's own rungs of plain Inception a third of that; every run for every seed."""
    plan = load_plan(PLAN)
    assert len(plan.runs) == 15 * 3
    composed = {}
    for run in plan.runs:
        key = (run.experiment, run.overrides)
        if key not in composed:
            composed[key] = compose_train(
                [f"experiment={run.experiment}", *plan.groups, f"preset={plan.preset}",
                 *plan.overrides, *run.overrides]
            )  # fmt: skip
        cfg = composed[key]
        assert cfg.data.eval_size is None  # every evaluation takes all 10,000 images
        decays = 180 // 3 if run.dir.startswith("ladder/inception/") else 180
        assert run.steps == math.ceil(decays * cfg.optim.decay_steps / cfg.recipe.decay_speedup)
    assert {r.seed for r in plan.runs} == {0, 1, 2}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("name: x\npreset: nope\ngroups: []\nseeds: [0]\nruns: []\n", "preset 'nope'"),
        ("name: x\npreset: quick\ngroups: []\nseeds: [0]\nruns: []\n", "has no runs"),
        (
            "name: x\npreset: quick\ngroups: []\nseeds: [0]\n"
            "runs: [{dir: a, experiment: inception, steps: 4}]\n",
            "lacks {seed}",
        ),
        (
            "name: x\npreset: quick\ngroups: []\nseeds: [0]\n"
            "runs: [{dir: 'a{seed}', experiment: incep, steps: 4}]\n",
            "experiment 'incep'",
        ),
        (
            "name: x\npreset: quick\ngroups: []\nseeds: [0]\n"
            "runs: [{dir: 'a{seed}', experiment: inception, steps: 0}]\n",
            "steps 0",
        ),
        (
            "name: x\npreset: quick\ngroups: []\nseeds: [0]\nruns:\n"
            "  - {dir: 'a{seed}', experiment: inception, steps: 4}\n"
            "  - {dir: 'a{seed}', experiment: bn_x5, steps: 4}\n",
            "more than once",
        ),
        ("name: [unclosed\n", "not valid YAML"),
        ("seeds: [0]\n", "lacks the key(s) name, preset, groups, runs"),
    ],
)
def test_a_bad_plan_is_refused_naming_the_problem(tmp_path, text, problem):
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    with pytest.raises(CampaignError, match="Nothing was trained") as error:
        load_plan(path)
    assert problem in str(error.value)


def test_makespan_fills_the_first_free_slot():
    assert makespan([10, 10, 10], 2) == 20
    assert makespan([30, 10, 10, 10], 2) == 30
    assert makespan([5], 2) == 5


TOY_PLAN = """\
name: toy
preset: quick
groups: [model=inception_proxy, data=fashion_mnist, optim=momentum_proxy]
seeds: [0]
overrides: [logger.wandb.mode=disabled, checkpoint_every=10, eval_every=10, log_every=5]
runs:
  - {dir: "inception_seed{seed}", experiment: inception, steps: 60}
  - {dir: "ladder/bn_recipe/x2_seed{seed}", experiment: bn_x5, steps: 20,
     overrides: [recipe.lr_multiplier=2]}
"""


def toy_repo(tmp_path: Path) -> Path:
    """A git repository holding this checkout's code and a toy plan, committed."""
    repo = tmp_path / "repo"
    for part in ("src", "configs"):
        shutil.copytree(REPO / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", repo)
    (repo / "experiments" / "campaigns").mkdir(parents=True)
    (repo / "experiments" / "campaigns" / "toy.yaml").write_text(TOY_PLAN)
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "toy"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True
        )
    return repo


def campaign(repo: Path, action: str, runs: Path, jobs: int = 2, **kwargs) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(repo / "src"),
        "BNREPRO_DATA": str(data_dir().resolve()),
    }
    command = [sys.executable, "-m", "bnrepro.campaign", action]
    command += ["experiments/campaigns/toy.yaml", "--runs", str(runs), "--jobs", str(jobs)]
    return subprocess.Popen(command, cwd=repo, env=env, text=True, **kwargs)


@pytest.mark.integration
def test_a_campaign_survives_a_stop_and_never_retrains(tmp_path, fashion_root):
    repo = toy_repo(tmp_path)
    runs = tmp_path / "runs"
    long_run = runs / "inception_seed0"

    # Stopped once the long run has logged past its first checkpoints, one job at a time, so
    # that a run still waits in the queue: the stop ends the campaign all the same.
    first = campaign(repo, "run", runs, jobs=1, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while time.time() < deadline:
        metrics = long_run / "metrics.csv"
        rows = metrics.read_text().splitlines() if metrics.exists() else []
        if len(rows) > 6:
            break
        time.sleep(0.5)
    first.send_signal(signal.SIGTERM)
    out, _ = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, out
    info = json.loads((long_run / "run.json").read_text())
    assert info["status"] == "interrupted", out
    stopped_at = info["steps"]
    assert 0 < stopped_at < 60

    # The code is the committed clone; a change on the work tree does not reach the runs.
    state = json.loads((runs / "campaign.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    assert state["commit"] == head.stdout.strip()
    assert info["git"]["commit"] == state["commit"]

    second = campaign(repo, "run", runs, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    info = json.loads((long_run / "run.json").read_text())
    assert info["status"] == "completed" and info["steps"] == 60
    segments = info["segments"]
    assert [s["from_step"] for s in segments][0] == 0
    assert 0 < segments[1]["from_step"] <= stopped_at
    assert segments[-1]["to_step"] == 60 and all(s["hardware"]["cpu"] for s in segments)
    records = repo / "results" / "campaigns" / "toy"
    assert json.loads((records / "campaign.json").read_text()) == state
    for run_dir in ("inception_seed0", "ladder/bn_recipe/x2_seed0"):
        for name in ("metrics.csv", "run.json", "config.yaml"):
            assert (records / run_dir / name).read_bytes() == (runs / run_dir / name).read_bytes()

    # Nothing left: a third run trains nothing, and status says so.
    mtime = (long_run / "metrics.csv").stat().st_mtime_ns
    third = campaign(repo, "run", runs, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = third.communicate(timeout=120)
    assert third.returncode == 0 and "2 of 2 runs ended, 0 to train" in out, out
    assert (long_run / "metrics.csv").stat().st_mtime_ns == mtime
    shown = campaign(repo, "status", runs, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = shown.communicate(timeout=60)
    assert "ended 2 of 2 runs; 0 of 80 planned steps left" in out, out


@pytest.mark.integration
def test_a_campaign_refuses_uncommitted_code_and_a_changed_plan(tmp_path, fashion_root):
    repo = toy_repo(tmp_path)
    runs = tmp_path / "runs"
    (repo / "src" / "bnrepro" / "nn.py").write_text("# changed\n")
    refused = campaign(repo, "run", runs, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = refused.communicate(timeout=60)
    assert refused.returncode == 2 and "uncommitted code (src/bnrepro/nn.py)" in out, out
    assert not runs.exists()

    subprocess.run(["git", "checkout", "-q", "--", "."], cwd=repo, check=True)
    runs.mkdir()
    (runs / "campaign.json").write_text(json.dumps({"plan_sha256": "0" * 64, "commit": "abc"}))
    refused = campaign(repo, "run", runs, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = refused.communicate(timeout=60)
    assert refused.returncode == 2 and "another version of the plan" in out, out


def test_a_lost_runs_folder_is_restored_from_the_committed_records(tmp_path, capsys):
    """A new machine or a wiped home keeps the campaign: its commit and plan, and every ended
    run, whose record is carried back so that it is never trained again."""
    plan = load_plan(PLAN)
    records = REPO / "results" / "campaigns" / plan.name
    runs = tmp_path / "runs"
    state = Campaign(plan, runs, records).restore()
    assert state == json.loads((records / "campaign.json").read_text())
    assert (runs / "campaign.json").read_bytes() == (records / "campaign.json").read_bytes()
    ended = [r for r in plan.runs if run_state(records, r).state in ("done", "diverged")]
    assert ended, "the committed records hold ended runs"
    for run in plan.runs:
        if run in ended:
            assert run_state(runs, run).state == run_state(records, run).state
            for name in RECORD_FILES:
                assert (runs / run.dir / name).read_bytes() == (
                    records / run.dir / name
                ).read_bytes()
        else:
            assert run_state(runs, run).state == "new" and not (runs / run.dir).exists()
    assert f"with the records of its {len(ended)} ended runs" in capsys.readouterr().out

    moved = tmp_path / "records"
    moved.mkdir()
    (moved / "campaign.json").write_text(json.dumps({"plan_sha256": "0" * 64, "commit": "abc"}))
    with pytest.raises(CampaignError, match="another version of the plan"):
        Campaign(plan, tmp_path / "elsewhere", moved).restore()
    assert not (tmp_path / "elsewhere").exists()


def test_the_step_rate_counts_running_runs_from_their_segments_start():
    """A running run's rate is its steps since its segment started over the time since; an
    ended run's is its run.json's wall time over its steps."""
    run = PlannedRun("a_seed0", "inception", 0, 100, ())
    running = RunState(run, "running", 60, 0.0, {"segments": [
        {"from_step": 20, "started": "2026-12-07T18:00:00+0000"}]})  # fmt: skip
    ended = RunState(run, "done", 100, 50.0, {"steps": 100})
    now = datetime(2026, 12, 7, 18, 0, 20, tzinfo=timezone.utc).timestamp()
    assert step_seconds([running], now) == pytest.approx(20 / 40)
    assert step_seconds([running, ended], now) == pytest.approx((20 + 50) / (40 + 100))
    assert step_seconds([RunState(run, "new", 0, 0.0, {})], now) is None


def test_a_deadline_starts_only_the_runs_that_end_by_it(tmp_path):
    """With --hours, the first run of the queue (the plan's order) that is expected to end in
    time at the measured rate (its experiment's where measured) starts; none where none fits;
    every run before a rate exists."""
    plan = load_plan(PLAN)
    campaign = Campaign(plan, tmp_path / "runs", tmp_path / "records")
    long, short = (next(r for r in plan.runs if r.steps == n) for n in (10_800, 1_800))
    queue = [RunState(long, "new", 0, 0.0, {}), RunState(short, "new", 0, 0.0, {})]
    assert next_run(campaign, queue, time.time() + 60) is queue[0]  # no rate measured yet

    ended = tmp_path / "runs" / plan.runs[0].dir
    ended.mkdir(parents=True)
    steps = plan.runs[0].steps
    info = {"status": "completed", "steps": steps, "wall_s": 0.5 * steps}
    (ended / "run.json").write_text(json.dumps(info))
    assert next_run(campaign, queue, None) is queue[0]
    assert next_run(campaign, queue, time.time() + 10_800 * 0.5 + 60) is queue[0]
    assert next_run(campaign, queue, time.time() + 1_800 * 0.5 + 60) is queue[1]
    assert next_run(campaign, queue, time.time() + 1_800 * 0.5 - 60) is None
    assert next_run(campaign, [], None) is None

    # Once a run of its own experiment has trained, a run is timed at that experiment's rate.
    fast = tmp_path / "runs" / next(r for r in plan.runs if r.experiment == short.experiment).dir
    fast.mkdir(parents=True)
    info = {"status": "completed", "steps": short.steps, "wall_s": 0.1 * short.steps}
    (fast / "run.json").write_text(json.dumps(info))
    assert next_run(campaign, queue, time.time() + 1_800 * 0.1 + 60) is queue[1]
    left = seconds_left(campaign.states(), time.time())
    assert left[short.dir] == pytest.approx(1_800 * 0.1)
    assert left[long.dir] == pytest.approx(10_800 * 0.5)
    mean = (0.5 * 10_800 + 0.1 * 1_800) / (10_800 + 1_800)  # no run of its experiment trained
    other = next(r for r in plan.runs if r.experiment not in (long.experiment, short.experiment))
    assert left[other.dir] == pytest.approx(other.steps * mean)


def test_hours_that_are_no_time_left_are_refused(tmp_path, capsys):
    assert main(["run", str(PLAN), "--runs", str(tmp_path / "runs"), "--hours", "0"]) == 2
    assert "--hours 0 is not a time left" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
