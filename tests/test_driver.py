"""bnrepro.driver, the frame of every experiment driver: each bad command line is refused
before anything starts (one paragraph, exit status 2, no folder made), every driver declares
its contract, and a sweep whose jobs fail names them (exit status 1, no traceback)."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from bnrepro import experiments
from bnrepro.driver import DRIVERS, Driver, UsageError, check_protocol, hydra_list
from bnrepro.errors import BnreproError
from bnrepro.experiments import figure1, figure2
from bnrepro.experiments.ics import proxy as ics_proxy
from bnrepro.run_protocol import trained_protocol
from bnrepro.sweep import first_sentence

# The options each bad value is tried on, for every driver that takes the option.
BAD_VALUES = {
    "--steps": ["0", "-5", "many", "1.5"],
    "--every": ["0", "-1"],
    "--jobs": ["0", "-1"],
    "--seeds": ["0,0", "a", "-1", "", "4294967296"],
    "--device": ["gpu", "cuda:x"],
    "--lrs": ["0.1,0.1", "inf", "-1", "nan"],
    "--init-stds": ["0", "1,1"],
}


def drivers() -> list[Driver]:
    return [experiments.driver(name) for name in DRIVERS]


def bad_inputs() -> list:
    cases = []
    for driver in drivers():
        flags = {option.flag for option in driver.options}
        for flag, values in BAD_VALUES.items():
            if flag in flags:
                for value in values:
                    label = f"{driver.name} {flag} {value!r}"
                    cases.append(pytest.param(driver, flag, value, id=label))
    return cases


def run_driver(name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, f"experiments/{name}.py", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_a_refused_command_line_exits_2_with_one_paragraph_and_makes_no_folder(tmp_path) -> None:
    """One driver's command line in a process of its own (every driver's: integration)."""
    out, runs = tmp_path / "out", tmp_path / "runs"
    result = run_driver("figure1", "run", "--jobs", "-1", "--out", str(out), "--runs", str(runs))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("bnrepro: --jobs -1 is not a number")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and not runs.exists()


def test_every_declared_driver_is_a_driver_with_its_script() -> None:
    for driver in drivers():
        assert isinstance(driver, Driver)
        assert (REPO / driver.script).is_file()
        assert callable(driver.run) and callable(driver.draw)


@pytest.mark.parametrize(("driver", "flag", "value"), bad_inputs())
def test_a_bad_option_value_is_refused_before_anything_starts(driver, flag, value) -> None:
    with pytest.raises(UsageError) as refused:
        driver.invocation(["run", flag, value])
    message = str(refused.value)
    assert flag in message and "Nothing was run or written" in message and "Fix: " in message
    assert "\n" not in message


@pytest.mark.parametrize("driver", drivers(), ids=lambda d: d.name)
def test_options_an_action_does_not_take_are_refused(driver) -> None:
    for argv in (["draw", "--runs", "x"], ["draw", "steps=5"], ["run", "--no-such-option"]):
        with pytest.raises(UsageError, match="Nothing was run or written"):
            driver.invocation(argv)
    if driver.collect:
        with pytest.raises(UsageError, match="collect needs the runs"):
            driver.invocation(["collect"])


NO_GPU = "and this machine has no CUDA GPU. Nothing was run or written. Fix: run it on a machine"


@pytest.mark.parametrize(
    ("driver", "argv", "expected"),
    [
        (figure2, ["--preset", "gpu_plateau"], "--preset gpu_plateau (configs/preset/gpu_plateau"
         ".yaml: device: cuda) trains on cuda, " + NO_GPU),
        (ics_proxy, ["--preset", "gpu"], "device: cuda) trains on cuda, " + NO_GPU),
        (figure1, ["--device", "cuda"], "--device cuda trains on cuda, " + NO_GPU),
        (figure1, ["--device", "cpu", "device=cuda:1"], "The override device=cuda:1 trains on "
         "cuda:1, " + NO_GPU),
    ],
    ids=["figure2 gpu_plateau", "ics_proxy gpu", "--device cuda", "an override"],
)  # fmt: skip
def test_a_run_on_a_gpu_this_machine_lacks_is_refused_before_any_folder(
    driver, argv, expected, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    out, runs = tmp_path / "out", tmp_path / "runs"
    with pytest.raises(SystemExit) as caught:
        driver.DRIVER.main(["run", *argv, "--out", str(out), "--runs", str(runs)])
    assert caught.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("bnrepro: ") and expected in stderr and stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_the_device_check_knows_which_gpus_there_are(monkeypatch) -> None:
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    with pytest.raises(UsageError, match="this machine has 1 CUDA GPU\\(s\\), cuda:0 to cuda:0"):
        figure1.DRIVER.invocation(["run", "--device", "cuda:1"])
    assert figure1.DRIVER.invocation(["run", "--device", "cuda:0"]).device == "cuda:0"
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    for argv in (["--preset", "gpu_plateau", "--device", "cpu"], ["--preset", "gpu", "device=cpu"]):
        assert figure2.DRIVER.invocation(["run", *argv]).action == "run"


@pytest.mark.parametrize("under", ["", "sub"], ids=["a file", "a path under a file"])
@pytest.mark.parametrize("action", ["run", "draw"])
def test_an_out_that_is_a_file_is_refused_as_not_a_folder(tmp_path, action, under) -> None:
    file = tmp_path / "README.md"
    file.write_text("kept\n")
    with pytest.raises(UsageError) as refused:
        figure1.DRIVER.invocation([action, "--out", str(file / under if under else file)])
    message = str(refused.value)
    assert f"{file} is a file, and --out names the folder of the results" in message
    assert "does not exist" not in message and "Fix: give --out a folder" in message
    assert file.read_text() == "kept\n"


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("hydra.run.dir=/tmp/\u00e9", "'hydra.run.dir=\"/tmp/\u00e9\"'"),
        ("data.root=/data/a=b", "'data.root=\"/data/a=b\"'"),
    ],
    ids=["non-ASCII", "an equals sign"],
)
def test_an_override_hydra_cannot_read_is_refused_with_how_to_quote_it(word, expected) -> None:
    with pytest.raises(BnreproError) as refused:
        figure1.DRIVER.invocation(["run", "--quick", word])
    message = str(refused.value)
    assert message.startswith(f"Hydra cannot read the override {word!r} (")
    assert "Nothing was run or written. Fix: quote the value" in message
    assert message.endswith(f"inside single quotes for the shell: {expected}.")


def test_defaults_are_the_committed_protocol_and_quick_its_short_one() -> None:
    from bnrepro.experiments import figure1

    full = figure1.DRIVER.invocation(["run"])
    quick = figure1.DRIVER.invocation(["run", "--quick", "--seeds", "4"])
    assert (full.seeds, full.steps, full.jobs) == ((0, 1, 2), None, 2)
    assert (quick.seeds, quick.steps) == ((4,), 1000)
    assert full.out == REPO / "results" / "figure1"
    assert quick.out == REPO / "runs" / "figure1-quick"
    assert full.runs.parent == REPO / "runs" / "figure1"
    assert quick.command == "python experiments/figure1.py run --quick --seeds 4"


def test_hydra_lists_and_first_sentences() -> None:
    assert hydra_list((0, 1, 2)) == "[0,1,2]"
    assert hydra_list((0.01, 0.0123456789, 1.0)) == "[0.01,0.0123456789,1.0]"
    assert first_sentence("MNIST not found in /x. Fix: run make data.\nmore") == (
        "MNIST not found in /x"
    )


@pytest.mark.integration
@pytest.mark.parametrize("name", DRIVERS)
def test_a_refused_command_exits_2_with_one_paragraph_and_makes_no_folder(name, tmp_path) -> None:
    out, runs = tmp_path / "out", tmp_path / "runs"
    result = run_driver(name, "run", "--quick", "--out", str(out), "--runs", str(runs), "--stesp")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("bnrepro: ") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and not runs.exists()


@pytest.mark.integration
def test_a_sweep_whose_jobs_fail_names_them_and_exits_1(tmp_path) -> None:
    """Every job fails at its start (no data where data.root points): the driver lists each
    failed job with the first sentence of its error, writes no results, shows no traceback."""
    out, runs = tmp_path / "out", tmp_path / "runs"
    result = run_driver(
        "figure1", "run", "--quick", "--out", str(out), "--runs", str(runs),
        f"data.root={tmp_path / 'nothing'}",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("bnrepro: 2 job(s) of the sweep in ") and "Fix: " in last
    assert "bn: failed - MNIST file(s)" in last and "plain: failed - MNIST file(s)" in last
    assert not out.exists()


@pytest.mark.integration
def test_a_sweep_hydra_refuses_exits_2(tmp_path) -> None:
    out, runs = tmp_path / "out", tmp_path / "runs"
    result = run_driver(
        "figure1", "run", "--quick", "--out", str(out), "--runs", str(runs), "no_such_key=3"
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("bnrepro: The sweep into ") and "before any job" in last
    assert not out.exists() and not Path(runs).exists()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (["reproduce-sensitivity", "JOBS=0", "STEPS=-5"], "bnrepro: --"),
        (["reproduce-ics", "JOBS=-1"], "bnrepro: --jobs -1 is not a number of processes"),
        (["reproduce-figure2", "PRESET=nope"], "bnrepro: argument --preset: invalid choice"),
        (["reproduce-figure1", "QUICK=yes"], "QUICK=yes is neither 1 nor 0"),
    ],
    ids=["sensitivity JOBS STEPS", "ics JOBS", "figure2 PRESET", "QUICK"],
)
def test_bad_make_variables_are_refused_the_same_way(variables, expected, tmp_path) -> None:
    """Make passes its variables on as the drivers' options, which refuse them before
    anything starts; QUICK is Make's own and refused by it."""
    result = subprocess.run(
        ["make", "--no-print-directory", *variables, f"RUNS={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr and "Fix: " in result.stderr
    assert "Traceback" not in result.stderr


def fake_runs(root: Path, **configs: dict) -> Path:
    """A runs folder of one run directory per entry of `configs` (name -> config), each with
    an empty run.json: all that the protocol check reads."""
    import yaml

    for name, config in configs.items():
        (root / name).mkdir(parents=True)
        (root / name / "run.json").write_text("{}")
        (root / name / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def committed_copy(folder: str, tmp_path: Path) -> Path:
    out = tmp_path / "results" / folder
    shutil.copytree(REPO / "results" / folder, out)
    return out


def every_file(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))}


def mlp_config(steps: int, seeds: list[int], variant: str) -> dict:
    return {"name": "figure1", "steps": steps, "seeds": seeds, "data": {"input": "grey"},
            "model": {"variant": variant}}  # fmt: skip


def test_a_quick_sweep_is_not_collected_over_the_committed_figure1(tmp_path, capsys) -> None:
    """figure1's committed folder records 50,000 steps; runs of 1,000 steps collected into it
    are refused before anything is read or written, and the folder keeps every byte."""
    from bnrepro.experiments import figure1

    out = committed_copy("figure1", tmp_path)
    before = every_file(out)
    runs = fake_runs(
        tmp_path / "runs",
        plain=mlp_config(1000, [0, 1], "plain"),
        bn=mlp_config(1000, [0, 1], "bn"),
    )
    with pytest.raises(SystemExit) as ended:
        figure1.DRIVER.main(["collect", "--runs", str(runs), "--out", str(out)])
    assert ended.value.code == 2
    message = capsys.readouterr().err
    assert message.startswith(f"bnrepro: {out} holds results of another protocol than the runs")
    assert "records steps=50000 (made by `python experiments/figure1.py run`)" in message
    assert "the runs were trained with steps=1000. Nothing was written." in message
    assert "--replace" in message and len(message.strip().splitlines()) == 1
    assert every_file(out) == before


def test_a_packed_ten_step_sweep_is_not_collected_over_the_committed_figure2(
    tmp_path, capsys
) -> None:
    """Packed runs of 10 steps collected into figure2's committed folder: refused, naming both
    protocols, and the folder keeps every byte."""
    from bnrepro.experiments import figure2

    out = committed_copy("figure2", tmp_path)
    before = every_file(out)
    config = {"name": "bn_x5", "steps": 10, "seeds": [0, 1], "model": {"width": 0.0625},
              "data": {"size": 16, "eval_size": 500}}  # fmt: skip
    runs = fake_runs(tmp_path / "runs", **{"packs/ladder/bn_x5": config})
    with pytest.raises(SystemExit) as ended:
        figure2.DRIVER.main(["collect", "--runs", str(runs), "--out", str(out)])
    assert ended.value.code == 2
    message = capsys.readouterr().err
    assert every_file(out) == before
    assert "steps=2000; model.width=0.125; data.eval_size=2000 (made by" in message
    assert "trained with name=bn_x5; steps=10; model.width=0.0625; data.eval_size=500" in message


def test_replace_or_the_same_protocol_collects(tmp_path) -> None:
    """--replace lets a collect replace results of another protocol; runs of the protocol a
    folder records (its `protocol`, written by `provenance`) collect into it unasked."""
    from bnrepro.experiments import figure1

    out = committed_copy("figure1", tmp_path)
    runs = fake_runs(tmp_path / "runs", plain=mlp_config(1000, [0, 1], "plain"))
    argv = ["collect", "--runs", str(runs), "--out", str(out)]
    check_protocol(figure1.DRIVER.invocation([*argv, "--replace"]))
    record = json.loads((out / "provenance.json").read_text())
    record["protocol"] = trained_protocol(runs)
    (out / "provenance.json").write_text(json.dumps(record))
    check_protocol(figure1.DRIVER.invocation(argv))
    other = fake_runs(tmp_path / "other", plain=mlp_config(1000, [0, 1, 2], "plain"))
    with pytest.raises(UsageError, match=r"records seeds=0,1 .* trained with seeds=0,1,2\. "):
        check_protocol(
            figure1.DRIVER.invocation(["collect", "--runs", str(other), "--out", str(out)])
        )


def test_draw_does_not_take_replace() -> None:
    from bnrepro.experiments import figure1

    with pytest.raises(UsageError, match="--replace: not taken by `draw`"):
        figure1.DRIVER.invocation(["draw", "--replace"])


def session_processes(session: int) -> list[str]:
    """The processes (not zombies) of session `session`, as '<pid> <command>'."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[3]) == session and fields[0] != "Z":
                found.append(f"{stat.parent.name} {(stat.parent / 'cmdline').read_text()}")
        except (OSError, IndexError):
            continue
    return found


def run_status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "run.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def sigterm_once(command: list[str], started, start_s: float, stop_s: float) -> tuple[int, str]:
    """Runs `python <command>` in a session of its own, sends it SIGTERM once `started()`,
    and waits `stop_s` for it to exit; then no process of its session may be left within
    10 s. Its exit status and stderr."""
    process = subprocess.Popen(
        [sys.executable, *command], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + start_s
        while not started():
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=stop_s)
        deadline = time.monotonic() + 10
        while session_processes(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert session_processes(process.pid) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return process.returncode, stderr


@pytest.mark.integration
def test_sigterm_to_a_driver_stops_its_whole_sweep(tmp_path, mnist_root) -> None:
    """SIGTERM to the driver alone (as `timeout` sends it) reaches the Hydra sweep and its
    training workers: within 10 s no process of the driver's session is left, every started
    run reads `interrupted` with its resume command, and the driver exits 143."""
    out, runs = tmp_path / "out", tmp_path / "runs"
    command = [
        "experiments/figure1.py", "run", "--quick", "--steps", "200000", "--out", str(out),
        "--runs", str(runs), f"data.root={mnist_root}",
    ]  # fmt: skip

    def started() -> bool:
        return all(run_status(runs / variant) == "running" for variant in ("plain", "bn"))

    code, stderr = sigterm_once(command, started, start_s=180, stop_s=10)
    assert code == 128 + signal.SIGTERM, stderr
    assert (
        stderr.strip().splitlines()[-1].startswith(f"bnrepro: SIGTERM stopped the sweep in {runs}")
    )
    for variant in ("plain", "bn"):
        info = json.loads((runs / variant / "run.json").read_text())
        assert info["status"] == "interrupted", info
        assert "Resume it with: " in info["error"]
    assert not out.exists()


@pytest.mark.integration
def test_sigterm_to_verify_stops_the_driver_it_reruns(tmp_path) -> None:
    """verify runs each driver as a child: SIGTERM to verify alone reaches the driver and,
    through it, the driver's sweep. Within 10 s no process of verify's session is left, every
    started run reads `interrupted` (or `completed`, if it ended first) and verify exits 143
    saying what it was rerunning."""
    scratch = tmp_path / "scratch"
    runs = scratch / "runs" / "figure2"
    command = ["experiments/verify.py", "--quick", "--only", "figure2", "--scratch", str(scratch)]

    def started() -> bool:
        return any(run_status(r.parent) == "running" for r in runs.rglob("run.json"))

    code, stderr = sigterm_once(command, started, start_s=300, stop_s=30)
    assert code == 128 + signal.SIGTERM, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("bnrepro: SIGTERM stopped `make verify` while it reran figure2"), last
    statuses = [run_status(r.parent) for r in runs.rglob("run.json")]
    assert "interrupted" in statuses and set(statuses) <= {"interrupted", "completed"}, statuses
