"""A campaign: the runs of a plan file, trained to their fixed lengths across any number of stops.

A plateaued protocol on a 2-core machine takes hours, more than any one sitting, so its runs
are trained as a campaign that any stop interrupts (SIGTERM, SIGKILL, a reboot) and the next
`run` resumes:

    python -m bnrepro.campaign run experiments/campaigns/figure2_cpu_plateau.yaml --runs DIR
    python -m bnrepro.campaign status experiments/campaigns/figure2_cpu_plateau.yaml --runs DIR

The plan file (YAML, committed before the campaign starts) names the preset, the seeds, the
overrides every run takes, and each run: its folder, experiment, length and own overrides.
`run` trains them in the plan's order, `--jobs` one-thread processes at a time, each with
`python -m bnrepro.train ... hydra.run.dir=<DIR>/<folder>`:
- a run that ended (completed or diverged) at its planned length is never trained again; one
  with a checkpoint is resumed from it (the trainer's resume is byte-identical); the others
  start fresh;
- the code is fixed: the first `run` records the commit of the clean work tree in
  DIR/campaign.json and clones it into DIR/code, from which every run of the campaign trains,
  whatever main holds later; a run whose run.json names another commit, a plan that changed, or
  a clone that moved is refused;
- a stop reaches every run: SIGTERM or SIGINT to `run` is passed to its training processes,
  which checkpoint and end `interrupted`, and `run` exits once they have;
- each finished run's record (metrics.csv, run.json, config.yaml: a few kB, not its
  checkpoint) is copied into `--records` (default results/campaigns/<plan name>/ of this
  checkout), in the layout of the runs folder, so that the results can be collected from
  committed records when the machine that trained them is gone;
- a runs folder that lost the campaign (a new machine, a wiped home) is restored from the
  records folder: its commit, its plan and every ended run, so that only the runs that had not
  ended are trained again.
`status` prints each run's step and state, the steps left and an estimate of the time left,
from the step rate the campaign has measured on this machine (evaluations included).
"""

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from bnrepro.atomic import atomic_write_bytes, write_json
from bnrepro.campaign_plan import CampaignError, Plan, PlannedRun, load_plan
from bnrepro.errors import BnreproError
from bnrepro.paths import REPO, RESULTS, data_dir
from bnrepro.rundir import owner_alive

STATE_FILE = "campaign.json"
LOCK_FILE = ".campaign.lock"
CODE_DIR = "code"
LOGS_DIR = "logs"
RECORD_FILES = ("metrics.csv", "run.json", "config.yaml")
# The paths of the work tree whose state shapes a run: they must be committed when a campaign
# starts, since the clone it trains from holds only what is committed.
CODE_PATHS = ("src", "configs", "experiments/campaigns", "pyproject.toml")
POLL_S = 2.0


# ---------------------------------------------------------------- git


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise CampaignError(
            f"`git {' '.join(args)}` failed in {cwd}: {out.stderr.strip()}. Nothing was trained. "
            "Fix: run the campaign from a clone of the bnrepro repository with git installed."
        )
    return out.stdout.strip()


def committed_head(repo: Path, plan: Plan) -> str:
    """The commit of `repo`'s HEAD, once the code paths and the plan file are all committed."""
    dirty = git(repo, "status", "--porcelain", "--", *CODE_PATHS, str(plan.path.resolve()))
    if dirty:
        changed = ", ".join(line.split(maxsplit=1)[-1] for line in dirty.splitlines()[:5])
        raise CampaignError(
            f"The campaign {plan.name} would start from uncommitted code ({changed}), which its "
            "runs could not name. Nothing was trained. Fix: commit (or stash) those changes, "
            "then start the campaign again."
        )
    return git(repo, "rev-parse", "HEAD")


# ---------------------------------------------------------------- the runs folder


@dataclass
class RunState:
    """Where one planned run stands: `state` is done, diverged, new, partial, running or
    failed; `step` the last step metrics.csv logged; `wall_s` and `segments` from run.json."""

    run: PlannedRun
    state: str
    step: int
    wall_s: float
    info: dict[str, Any]


def read_info(run_dir: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        info = json.loads((run_dir / "run.json").read_text())
        if isinstance(info, dict):
            return info
    return {}


def last_step(run_dir: Path) -> int:
    """The step of metrics.csv's last whole row (0 when there is none)."""
    try:
        lines = (run_dir / "metrics.csv").read_text().splitlines()
    except OSError:
        return 0
    for line in reversed(lines[1:]):
        head = line.split(",", 1)[0]
        if head.isdigit():
            return int(head)
    return 0


def run_state(runs_dir: Path, run: PlannedRun) -> RunState:
    run_dir = runs_dir / run.dir
    info = read_info(run_dir)
    status = info.get("status")
    step = last_step(run_dir)
    if status == "diverged" or (status == "completed" and info.get("steps") == run.steps):
        state = "done" if status == "completed" else "diverged"
    elif status == "running" and owner_alive(run_dir):
        state = "running"
    elif (run_dir / "checkpoint.pt").exists():
        state = "failed" if status == "failed" else "partial"
    else:
        state = "new"
    return RunState(run, state, step, float(info.get("wall_s") or 0.0), info)


def check_commits(states: Iterable[RunState], commit: str) -> None:
    """Every segment of every run that started was trained by the campaign's commit."""
    foreign = []
    for s in states:
        segments = (s.info.get("segments") or [s.info]) if s.info else []
        commits = {(seg.get("git") or {}).get("commit") for seg in segments}
        if commits - {commit}:
            foreign.append(f"{s.run.dir} ({', '.join(sorted(str(c) for c in commits))})")
    if foreign:
        raise CampaignError(
            f"Runs of the campaign were trained by code other than its commit {commit[:12]}: "
            f"{', '.join(foreign)}. Nothing was trained. Fix: move those run folders out of "
            "the campaign's runs folder (they will be trained again), or continue them in the "
            "campaign they belong to."
        )


class Campaign:
    """The runs folder of one plan: its state file, code clone, lock and records."""

    def __init__(self, plan: Plan, runs_dir: Path, records_dir: Path):
        self.plan = plan
        self.dir = runs_dir.expanduser().resolve()
        self.records = records_dir
        self.code = self.dir / CODE_DIR

    def state(self) -> dict[str, Any] | None:
        path = self.dir / STATE_FILE
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise CampaignError(
                f"{path} cannot be read ({error}). Nothing was trained. Fix: restore it (it "
                "names the campaign's commit and plan), or start the campaign in a new --runs "
                "folder."
            ) from error

    def check_state(self, state: dict[str, Any]) -> None:
        if state.get("plan_sha256") != self.plan.sha256:
            raise CampaignError(
                f"The campaign in {self.dir} was started from another version of the plan "
                f"{self.plan.path} (sha256 {str(state.get('plan_sha256'))[:12]}, now "
                f"{self.plan.sha256[:12]}). Nothing was trained. Fix: continue it with the plan "
                f"of commit {state.get('commit', '?')[:12]} (git checkout that commit's plan "
                "file), or start a new campaign in a new --runs folder."
            )

    def start_or_resume(self) -> str:
        """The campaign's commit: recorded by its first `run`, with the clone made from it;
        afterwards, checked against the clone."""
        state = self.state()
        if state is None and (self.records / STATE_FILE).exists():
            state = self.restore()
        if state is None:
            commit = committed_head(REPO, self.plan)
            self.dir.mkdir(parents=True, exist_ok=True)
            self.clone(commit)
            write_json(
                self.dir / STATE_FILE,
                {
                    "plan": self.plan.name,
                    "plan_file": str(self.plan.path.resolve().relative_to(REPO)),
                    "plan_sha256": self.plan.sha256,
                    "commit": commit,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                },
            )
            return commit
        self.check_state(state)
        commit = state["commit"]
        if not (self.code / ".git").exists():
            self.clone(commit)
        head = git(self.code, "rev-parse", "HEAD")
        dirty = git(self.code, "status", "--porcelain", "--untracked-files=no")
        if head != commit or dirty:
            raise CampaignError(
                f"The campaign's code clone {self.code} is at {head[:12]}"
                f"{' with changes' if dirty else ''}, not at the campaign's commit "
                f"{commit[:12]}. Nothing was trained. Fix: `git -C {self.code} checkout --force "
                f"{commit}` (or delete {self.code}, which the next run clones again)."
            )
        return commit

    def restore(self) -> dict[str, Any]:
        """The campaign of the records folder, carried into a runs folder that lost it (a new
        machine, a wiped home): its campaign.json, and each ended run's record, so that no
        ended run is trained again; a run that was in progress starts afresh."""
        try:
            state = json.loads((self.records / STATE_FILE).read_text())
        except (OSError, ValueError) as error:
            raise CampaignError(
                f"{self.records / STATE_FILE} cannot be read ({error}). Nothing was trained. "
                "Fix: restore it with `git checkout -- <that file>`, or start a new campaign "
                "with another --records folder."
            ) from error
        self.check_state(state)
        self.dir.mkdir(parents=True, exist_ok=True)
        ended = []
        for run in self.plan.runs:
            if run_state(self.records, run).state in ("done", "diverged"):
                (self.dir / run.dir).mkdir(parents=True, exist_ok=True)
                for name in RECORD_FILES:
                    source = self.records / run.dir / name
                    atomic_write_bytes(self.dir / run.dir / name, source.read_bytes())
                ended.append(run.dir)
        atomic_write_bytes(self.dir / STATE_FILE, (self.records / STATE_FILE).read_bytes())
        print(f"campaign: {self.dir} had no campaign; restored it from {self.records} "
              f"with the records of its {len(ended)} ended runs", flush=True)  # fmt: skip
        return state

    def clone(self, commit: str) -> None:
        if self.code.exists():
            shutil.rmtree(self.code)
        subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(REPO), str(self.code)],
                       check=True)  # fmt: skip
        git(self.code, "checkout", "--quiet", "--detach", commit)

    def states(self) -> list[RunState]:
        return [run_state(self.dir, run) for run in self.plan.runs]

    def sync_records(self, states: Iterable[RunState]) -> list[str]:
        """Copies the campaign's campaign.json (its commit and plan) and each ended run's
        record into the records folder where it differs; returns the run folders it wrote."""
        written = []
        state = (self.dir / STATE_FILE).read_bytes()
        if not (self.records / STATE_FILE).exists():
            self.records.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.records / STATE_FILE, state)
        for s in states:
            if s.state not in ("done", "diverged"):
                continue
            source, target = self.dir / s.run.dir, self.records / s.run.dir
            changed = False
            for name in RECORD_FILES:
                data = (source / name).read_bytes()
                if not (target / name).exists() or (target / name).read_bytes() != data:
                    target.mkdir(parents=True, exist_ok=True)
                    atomic_write_bytes(target / name, data)
                    changed = True
            if changed:
                written.append(s.run.dir)
        return written


# ---------------------------------------------------------------- run


def launch(campaign: Campaign, s: RunState) -> subprocess.Popen:
    run_dir = campaign.dir / s.run.dir
    args = campaign.plan.train_args(s.run, run_dir)
    if s.state in ("partial", "failed"):
        args.append("resume=true")
    log = campaign.dir / LOGS_DIR / f"{s.run.dir.replace('/', '__')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(campaign.code / "src"),
        "BNREPRO_DATA": str(data_dir().resolve()),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    with log.open("a") as out:
        out.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} python -m bnrepro.train "
                  f"{' '.join(args)}\n")  # fmt: skip
        out.flush()
        return subprocess.Popen(
            [sys.executable, "-m", "bnrepro.train", *args],
            cwd=campaign.code, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def take_lock(campaign: Campaign) -> IO[str]:
    """The campaign's lock file, locked (until it is closed) and naming this process; a
    CampaignError, before anything starts, where another process trains the campaign."""
    lock = (campaign.dir / LOCK_FILE).open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        raise CampaignError(
            f"Another process is training the campaign in {campaign.dir} ({lock.read().strip()})."
            " Nothing was started. Fix: watch it with `python -m bnrepro.campaign status`, or "
            "stop it (SIGTERM) before starting this one."
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()}\n")
    lock.flush()
    return lock


def seconds_left(states: list[RunState], now: float) -> dict[str, float | None]:
    """Each run's expected seconds to its end: its steps left at its experiment's measured step
    rate where one of that experiment's runs has trained (a step's cost differs between
    architectures), else at the campaign's; None before any rate is measured."""
    overall = step_seconds(states, now)
    rates = {
        experiment: step_seconds([s for s in states if s.run.experiment == experiment], now)
        or overall
        for experiment in {s.run.experiment for s in states}
    }
    return {
        s.run.dir: None if rates[s.run.experiment] is None
        else (s.run.steps - s.step) * rates[s.run.experiment]
        for s in states
    }  # fmt: skip


def next_run(campaign: Campaign, queue: list[RunState], deadline: float | None) -> RunState | None:
    """The first run of `queue` (the plan's order) expected to end by `deadline` (a time, or
    None for no deadline; `seconds_left`); None where none is. Before any rate is measured
    every run fits."""
    if deadline is None or not queue:
        return queue[0] if queue else None
    now = time.time()
    left = seconds_left(campaign.states(), now)
    fits = (left[s.run.dir] is None or now + left[s.run.dir] <= deadline for s in queue)
    return next((s for s, fit in zip(queue, fits, strict=True) if fit), None)


def reap(campaign: Campaign, running: dict[str, subprocess.Popen], stopping: bool) -> list[str]:
    """Takes each process of `running` that has exited out of it, copying the record of a run
    that ended; returns the runs that failed (none while `stopping`: a stopped run checkpointed
    and is resumed by the next `run`)."""
    failed = []
    for name, process in list(running.items()):
        code = process.poll()
        if code is None:
            continue
        del running[name]
        planned = next(r for r in campaign.plan.runs if r.dir == name)
        s = run_state(campaign.dir, planned)
        if s.state in ("done", "diverged"):
            campaign.sync_records([s])
            print(f"campaign: {name} {s.state} at step {s.step}; record in "
                  f"{campaign.records / name}", flush=True)  # fmt: skip
        elif not stopping:
            failed.append(name)
            print(f"campaign: {name} ended with exit status {code} ({s.state}); see "
                  f"{campaign.dir / LOGS_DIR}", flush=True)  # fmt: skip
    return failed


def run(campaign: Campaign, jobs: int, hours: float | None = None) -> int:
    """Trains what is left of the campaign, `jobs` processes at a time, starting only runs
    expected to end within `hours` (where given); returns the exit status (0: every run ended,
    or none left fits in `hours`; 1: a run failed; 128 + signal: stopped)."""
    deadline = time.time() + hours * 3600 if hours else None
    commit = campaign.start_or_resume()
    lock = take_lock(campaign)
    states = campaign.states()
    check_commits(states, commit)
    busy = [s.run.dir for s in states if s.state == "running"]
    if busy:
        raise CampaignError(
            f"Runs of the campaign are being trained by other processes: {', '.join(busy)}. "
            "Nothing was started. Fix: stop those processes, then start the campaign again."
        )
    for written in campaign.sync_records(states):
        print(f"campaign: record of {written} -> {campaign.records / written}", flush=True)
    queue = [s for s in states if s.state in ("new", "partial", "failed")]
    print(
        f"campaign {campaign.plan.name}: {len(states) - len(queue)} of {len(states)} runs "
        f"ended, {len(queue)} to train, {jobs} at a time, code at {commit[:12]} "
        f"({campaign.code})",
        flush=True,
    )
    running: dict[str, subprocess.Popen] = {}
    failed: list[str] = []
    stop: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        stop.append(signum)
        for process in running.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)

    handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            while len(running) < jobs and not stop:
                s = next_run(campaign, queue, deadline)
                if s is None:
                    break
                queue.remove(s)
                print(f"campaign: {'resume' if s.state != 'new' else 'start'} {s.run.dir} "
                      f"(step {s.step} of {s.run.steps})", flush=True)  # fmt: skip
                running[s.run.dir] = launch(campaign, s)
            if not running:
                break
            time.sleep(POLL_S)
            failed += reap(campaign, running, stopping=bool(stop))
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        lock.close()
    if stop:
        print(f"campaign: stopped by {signal.Signals(stop[0]).name}; every run in progress "
              "checkpointed. Continue with the same command.", flush=True)  # fmt: skip
        return 128 + stop[0]
    if failed:
        print(f"campaign: {len(failed)} run(s) failed: {', '.join(failed)}. The others went "
              "on; the next `run` retries them from their checkpoints.", flush=True)  # fmt: skip
        return 1
    if queue:
        print(f"campaign: {len(queue)} run(s) left, none expected to end within --hours "
              f"{hours:g}; the next `run` trains them.", flush=True)  # fmt: skip
        return 0
    print(f"campaign {campaign.plan.name}: every run ended.", flush=True)
    return 0


# ---------------------------------------------------------------- status


def step_seconds(states: Iterable[RunState], now: float) -> float | None:
    """Seconds a step of one process, evaluations included, over every run that has trained:
    an ended or stopped run's wall time and steps (run.json), a running one's time and steps
    since its segment started."""
    trained = []
    for s in states:
        if s.state == "running":
            segment = s.info["segments"][-1]
            started = datetime.strptime(segment["started"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
            trained.append((now - started, s.step - segment["from_step"]))
        elif s.wall_s > 0:
            trained.append((s.wall_s, s.info.get("steps") or s.step))
    steps = sum(n for _, n in trained)
    return sum(w for w, _ in trained) / steps if steps > 0 else None


def makespan(remaining: list[float], jobs: int) -> float:
    """The time to train `remaining` (seconds each, in order) on `jobs` slots, each run
    taking the first free slot."""
    slots = [0.0] * jobs
    for seconds in remaining:
        slots[slots.index(min(slots))] += seconds
    return max(slots)


def status(campaign: Campaign, jobs: int) -> str:
    state = campaign.state()
    states = campaign.states()
    lines = [
        f"campaign {campaign.plan.name} in {campaign.dir}"
        + (
            f" (commit {state['commit'][:12]}, started {state['started']})"
            if state
            else " (not started)"
        )  # fmt: skip
    ]
    width = max(len(s.run.dir) for s in states)
    for s in states:
        cpu = {seg.get("hardware", {}).get("cpu") for seg in s.info.get("segments") or []}
        hardware = f"  [{', '.join(sorted(str(c) for c in cpu))}]" if cpu else ""
        lines.append(f"  {s.run.dir:<{width}}  {s.step:>6,}/{s.run.steps:<6,}  {s.state}{hardware}")
    ended = [s for s in states if s.state in ("done", "diverged")]
    left = [0 if s in ended else s.run.steps - s.step for s in states]
    now = time.time()
    per_step = step_seconds(states, now)
    lines.append(
        f"ended {len(ended)} of {len(states)} runs; {sum(left):,} of "
        f"{sum(s.run.steps for s in states):,} planned steps left (diverged runs end early)"
    )
    if per_step is None:
        lines.append("no step rate measured yet: the estimate comes once a run has trained")
    else:
        expected = seconds_left(states, now)
        eta = makespan([expected[s.run.dir] or 0.0 for s in states if s not in ended], jobs)
        lines.append(
            f"measured {per_step * 1000:.0f} ms a step per process (evaluations included; each "
            f"experiment's own where measured); about {eta / 3600:.1f} h left at {jobs} "
            "processes at a time"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bnrepro.campaign",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=("run", "status"))
    parser.add_argument("plan", type=Path, help="the plan file (experiments/campaigns/*.yaml)")
    parser.add_argument("--runs", type=Path, required=True, help="the campaign's runs folder")
    parser.add_argument(
        "--records", type=Path,
        help="where each ended run's record is copied (default results/campaigns/<plan name>)",
    )  # fmt: skip
    parser.add_argument("--jobs", type=int, default=2, help="processes at a time (default 2)")
    parser.add_argument(
        "--hours", type=float,
        help="start only runs expected to end within this many hours, at the measured step "
        "rate (for a machine that will be lost then: no run is left half-trained)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        if args.jobs < 1:
            raise CampaignError(
                f"--jobs {args.jobs} is not a number of processes. Nothing was trained. Fix: "
                "give a whole number above 0, e.g. --jobs 2."
            )
        if args.hours is not None and not args.hours > 0:
            raise CampaignError(
                f"--hours {args.hours:g} is not a time left. Nothing was trained. Fix: give a "
                "number of hours above 0, e.g. --hours 2.5, or leave it out."
            )
        plan = load_plan(args.plan)
        records = args.records or RESULTS / "campaigns" / plan.name
        campaign = Campaign(plan, args.runs, records)
        if args.action == "status":
            print(status(campaign, args.jobs))
            return 0
        return run(campaign, args.jobs, args.hours)
    except BnreproError as error:
        print(f"\nbnrepro.campaign: {error}\n", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
