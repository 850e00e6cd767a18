"""Figure 1 under other protocols: `experiments/figure1.py run --experiment NAME`, the
figure1_momentum experiment (a public reproduction's choices) and binary input. No training:
compose, argument passing, and the README generated from committed CSV files."""

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, compose_train

from bnrepro import driver as frame
from bnrepro import plot
from bnrepro.experiments import figure1 as driver
from bnrepro.experiments.figure1 import protocol, report
from bnrepro.tables import read_csv

# The committed folders `make figures` redraws: (folder, experiment, input).
PROTOCOLS = [
    ("figure1_momentum", "figure1_momentum", "grey"),
    ("figure1_binary", "figure1", "binary"),
    ("figure1_momentum_binary", "figure1_momentum", "binary"),
]


@pytest.mark.parametrize("model", ["mlp", "mlp_bn"])
def test_figure1_momentum_is_the_public_reproductions_protocol(model) -> None:
    cfg = compose_train(["experiment=figure1_momentum", f"model={model}"])
    assert (cfg.optim.momentum, cfg.optim.lr, cfg.optim.weight_decay) == (0.9, 0.01, 0.0)
    assert cfg.model.init_std == 0.01
    assert (cfg.steps, cfg.batch_size, list(cfg.seeds)) == (50_000, 60, [0, 1, 2])
    assert cfg.data.input == "grey"
    # Figure 1 otherwise: only the optimizer, the init std and the name change.
    base = compose_train(["experiment=figure1", f"model={model}"])
    assert (cfg.eval_every, cfg.probe, cfg.model.sizes) == (
        base.eval_every,
        base.probe,
        base.model.sizes,
    )
    assert cfg.name == "figure1_momentum"


def test_binary_input_is_a_data_override() -> None:
    cfg = compose_train(["experiment=figure1_momentum", "model=mlp", "data.input=binary"])
    assert cfg.data.input == "binary" and cfg.optim.momentum == 0.9


@pytest.mark.parametrize(
    ("args", "experiment", "out"),
    [
        ([], "figure1", REPO / "results" / "figure1"),
        (["--experiment", "figure1_momentum"], "figure1_momentum", None),
        (
            ["--experiment", "figure1_momentum", "--out", "elsewhere", "data.input=binary"],
            "figure1_momentum",
            "elsewhere",
        ),
    ],
    ids=["default", "momentum", "momentum binary elsewhere"],
)
def test_run_passes_the_experiment_to_the_sweep(monkeypatch, args, experiment, out) -> None:
    calls = {}

    def sweep(command, sweep_dir, cwd):
        calls.update(command=command)
        return 0, None

    monkeypatch.setattr(frame, "run_group", sweep)
    monkeypatch.setattr(plot, "plot_sweep", lambda runs, out: [])  # nothing was trained
    invocation = driver.DRIVER.invocation(["run", *args])
    protocol.run(invocation)
    command = calls["command"]
    assert f"experiment={experiment}" in command and "model=mlp,mlp_bn" in command
    assert [word for word in command if word.startswith("experiment=")] == [
        f"experiment={experiment}"
    ]
    assert ("data.input=binary" in command) == ("data.input=binary" in args)
    expected = REPO / "results" / experiment if out is None else out
    assert invocation.out == Path(expected).resolve()
    assert invocation.runs.parent == REPO / "runs" / experiment


def test_the_readme_names_the_protocol_from_provenance() -> None:
    summary = pd.DataFrame(
        {
            "variant": ["bn", "plain"],
            "seed": [0, 0],
            "final_test_acc": [0.98, 0.95],
            "steps": [1000, 1000],
            "status": ["completed"] * 2,
        }
    )
    curves = pd.DataFrame(
        [(v, 0, s, 0.5, -1.0, 0.0, 1.0) for v in ("bn", "plain") for s in (0, 500, 1000)],
        columns=["variant", "seed", "step", "test_acc", "p15", "p50", "p85"],
    )
    config = {"name": "figure1_momentum", "data": {"input": "binary"}}
    provenance = {
        "command": "python experiments/figure1.py run --experiment figure1_momentum "
        "--out /x data.input=binary",
        "config": {"plain": config, "bn": config},
        "experiment": protocol.experiment_of({"plain": config, "bn": config}),
    }
    readme = report.readme(summary, curves, provenance)
    assert "(figure1_momentum, binary input)" in readme
    assert "`data.input=binary`" in readme and "configs/experiment/figure1_momentum.yaml" in readme
    assert "| 0.9492 |" in readme and "| 0.9815 |" in readme and "Al13n0231's: 3.23" in readme
    assert "/x" not in readme
    # figure1 with grey input, or a provenance from before --experiment: the original README.
    default = report.readme(summary, curves, {"command": "python experiments/figure1.py run"})
    assert default.startswith("# Figure 1: MNIST with and without Batch Normalization\n")
    assert "Al13n0231" not in default and "data.input" not in default


@pytest.mark.parametrize(("folder", "experiment", "data_input"), PROTOCOLS)
def test_committed_protocols_match_their_readme(folder, experiment, data_input) -> None:
    """Each committed folder was trained with its experiment and input, and its README is
    what `draw` writes from its CSV files (the figure is redrawn by `make figures`)."""
    committed = REPO / "results" / folder
    if not (committed / "summary.csv").exists():
        pytest.skip(f"results/{folder} has not been generated in this checkout")
    provenance = json.loads((committed / "provenance.json").read_text())
    assert protocol.protocol(provenance) == (experiment, data_input)
    for config in provenance["config"].values():
        assert (config["steps"], config["seeds"]) == (50_000, [0, 1, 2])
    summary = read_csv(committed / "summary.csv", protocol.SUMMARY_COLUMNS, "")
    curves = read_csv(committed / "curves.csv", protocol.CURVE_COLUMNS, "", optional=("test_acc",))
    assert (committed / "README.md").read_text() == report.readme(summary, curves, provenance)
