"""experiments/bench_packed.py (`make bench`): its measurement of packed members against
separate runs, at a toy size on the CPU."""

import importlib.util

import pytest
from conftest import REPO

EXPERIMENTS = REPO / "experiments"
TOY = ["model.width=0.0625", "data.size=16", "data.resize=bilinear"]


@pytest.fixture
def bench_packed(monkeypatch):
    """The script as a module (it imports its neighbour experiments/bench.py)."""
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    spec = importlib.util.spec_from_file_location("bench_packed", EXPERIMENTS / "bench_packed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measure_times_both_sides_and_their_ratio(fashion_root, bench_packed) -> None:
    row = bench_packed.measure("bn_x5", "cpu", "cpu", 2, steps=2, warmup=1, overrides=TOY)
    assert row["members"] == 2
    assert row["packed_steps_s"] > 0 and row["separate_steps_s"] > 0
    assert row["packed_ms"] == pytest.approx(1e3 / row["packed_steps_s"])
    assert row["separate_ms"] == pytest.approx(1e3 / row["separate_steps_s"])
    assert row["speedup"] == pytest.approx(row["packed_steps_s"] / row["separate_steps_s"])


def test_the_config_is_the_presets_with_one_seed_per_member(bench_packed) -> None:
    cfg = bench_packed.bench_config("inception", "gpu", "cpu", range(3), TOY[:1])
    assert list(cfg.seeds) == [0, 1, 2] and cfg.device == "cpu"
    assert cfg.model.width == 0.0625 and cfg.data.size == 32 and cfg.data.resize == "pad"
