"""The CIFAR-10 protocol of the suite (`cifar_protocol`): its runs are valid configs of the
stated sizes, and the reproduce command selects them."""

import pytest

from deqfl.cli.main import main
from deqfl.experiments.config import load_config
from deqfl.experiments.reproduce import cifar_protocol as cp
from deqfl.experiments.reproduce.suite import FULL, QUICK, build_suite
from deqfl.models import build_model


def _cifar(specs):
    return [s for s in specs if s.dataset == "cifar10"]


@pytest.mark.parametrize("gpu", [False, True])
def test_every_cifar_run_is_a_valid_config_of_its_scale(gpu):
    specs = _cifar(build_suite(FULL, with_cifar=True, gpu=gpu))
    scale = cp.GPU if gpu else cp.CPU
    assert len({s.run_id for s in specs}) == len(specs)
    assert {s.experiment for s in specs} == {cp.SWEEP, "E1", "E2", "E3"} and {s.seed for s in specs} == {0, 1, 2, 100}
    for spec in specs:
        config = load_config(None, list(spec.overrides))
        assert config.data.augment == "crop-flip" and config.train.batch_size == 64
        assert config.experiment.device == ("cuda" if gpu else "auto")  # the default
        assert all(t.local_steps == scale.local_steps for t in config.fleet.resolved_tiers())
        assert config.train.optimizer == ("sgd" if spec.method in cp.SGD_RULES or spec.method.endswith("-sgd") else "adam")
        if spec.experiment != cp.SWEEP:
            assert config.experiment.rounds == scale.rounds and config.train.lr_schedule == "cosine"
    e1 = {seed: sorted(s.method for s in specs if s.experiment == "E1" and s.seed == seed) for seed in (0, 1, 2)}
    assert e1 == {0: sorted(cp.MODELS), 1: sorted(cp.E1_HEADLINE), 2: sorted(cp.E1_HEADLINE)}  # the headline on 3 seeds
    assert {s.seed for s in specs if s.experiment in ("E2", "E3")} == {0}
    e3 = [s for s in specs if s.experiment == "E3"]
    assert len(e3) == 2 * 7 - 2  # six rules and FedNova's SGD control; E2 already ran two rules at alpha 0.5
    control, fednova = ({s.group: load_config(None, list(s.overrides)) for s in e3 if s.method == m}
                        for m in (cp.SGD_CONTROL, "fednova"))
    for alpha, config in control.items():  # the control differs from FedNova in the aggregator alone
        assert config.fusion.aggregator == "mean" and fednova[alpha].fusion.aggregator == "fednova"
        assert config.train == fednova[alpha].train and config.fleet == fednova[alpha].fleet


def test_each_family_has_at_least_three_growing_widths_and_sweeps_its_170k_model():
    for name, labels in cp.FAMILIES.items():
        counts = []
        for label in labels:
            config = load_config(None, list(cp.MODELS[label]))
            model = build_model(config.model.name, input_shape=(3, 32, 32), **config.model.options)
            counts.append(sum(p.numel() for p in model.parameters()))
        assert len(counts) >= 3 and counts == sorted(counts) and 20_000 < counts[0] and counts[-1] < 300_000
        assert 150_000 < counts[labels.index(cp.SWEEP_MODELS[name])] < 180_000


def test_quick_and_slice_sizes_and_the_cli_flags(capsys, tmp_path):
    quick = _cifar(build_suite(QUICK, only=("E1",), with_cifar=True))
    assert [s.method for s in quick] == list(cp.QUICK.e1_models)
    sliced = _cifar(build_suite(QUICK, only=("E1",), with_cifar=True, gpu=True))
    assert [s.method for s in sliced] == list(cp.SLICE.e1_models)
    assert all("experiment.device=cuda" in s.overrides and "experiment.rounds=15" in s.overrides for s in sliced)
    assert main(["reproduce", "--quick", "--gpu"]) == 2
    assert "--with-cifar" in capsys.readouterr().err
    assert main(["reproduce", "--quick", "--cifar-only", "--report-only", "--only", "E1", "--out", str(tmp_path)]) == 0


def test_the_sweep_table_picks_by_held_back_accuracy():
    def run(method, lr, held, test):
        return {"experiment": cp.SWEEP, "method": method, "group": f"lr={lr:g}", "seed": 100,
                "rounds": [{"client_accuracy": {"mean": held}}], "summary": {"final_accuracy": test}}

    results = [run("resnet-14", 1e-3, 0.5, 0.4), run("resnet-14", 3e-3, 0.6, 0.3), run("mdeq-small-8-sgd", 0.03, 0.4, 0.35),
               {"experiment": "T0", "method": "deq", "group": "lr=0.1"}]
    lines = cp.sweep_section(results)
    row = next(line for line in lines if line.startswith("| resnet-14"))
    assert "60.00 / 30.00" in row and row.endswith(f"| 0.003 | {cp.LEARNING_RATES['resnet']:g} |")
    assert any(line.startswith("| mdeq-small-8-sgd") and line.endswith(f"| {cp.SGD_LR:g} |") for line in lines)
    assert cp.sweep_section(results[-1:]) == []
