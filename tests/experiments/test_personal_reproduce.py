"""E5 (personalised FL) in the evidence suite: its runs, the store's per-round personal
accuracies and its report section, on fabricated result records."""

import json

import pytest

from deqfl.cli.main import main
from deqfl.experiments.config import load_config
from deqfl.experiments.reproduce import cifar_protocol
from deqfl.experiments.reproduce.personal_protocol import ALGORITHMS, CNN_FIRST, FULL, QUICK, build_e5
from deqfl.experiments.reproduce.personal_report import (
    MEMORY_FILE,
    personal_mb_to_target,
    recent_mean,
    section_e5,
    tier_accuracy,
    write_e5,
)
from deqfl.experiments.reproduce.store import compact_rounds


def test_e5_runs_put_the_headline_comparison_first_and_keep_their_ids():
    runs = build_e5(FULL)
    first = runs[: len(ALGORITHMS) + len(CNN_FIRST)]
    assert {(s.dataset, s.group, s.seed) for s in first} == {("mnist", "labels=2", 0)}
    assert [s.method for s in first] == [f"deq-{a}" for a in ALGORITHMS] + [f"cnn-{a}" for a in CNN_FIRST]
    assert runs[len(first)].dataset == "fashion-mnist"
    ids = [s.run_id for s in runs]
    assert len(ids) == len(set(ids)) == 2 * 2 * 2 * len(ALGORITHMS) + 2 * (1 + len(CNN_FIRST))
    assert ids[0] == "E5-mnist-deq-fedeq-labels=2-s0-ee049e4c"  # stored results are found by id
    assert {s.seed for s in runs[-6:]} == {1, 2}
    for spec in build_e5(QUICK):
        config = load_config(None, list(spec.overrides))
        assert config.personalization.algorithm == spec.method.split("-", 1)[1]
        assert config.data.partition == "pathological" and config.personalization.unseen_fraction == 0.1


def test_e5_cifar_cell_runs_the_cifar_protocol_with_100_clients_and_the_mixed_fleet():
    plain = build_e5(FULL)
    runs = build_e5(FULL, cifar=cifar_protocol.CPU)
    assert runs[: len(plain)] == plain  # the CIFAR-10 cell comes last and changes no stored id
    cifar = runs[len(plain):]
    assert {(s.dataset, s.group, s.seed) for s in cifar} == {("cifar10", "labels=5", 0)}
    assert [s.method for s in cifar[: len(ALGORITHMS)]] == [f"deq-{a}" for a in ALGORITHMS]
    assert sorted(s.method for s in cifar[len(ALGORITHMS):]) == sorted(f"cnn-{a}" for a in ALGORITHMS)
    assert len({s.run_id for s in runs}) == len(runs)
    for spec in cifar:
        config = load_config(None, list(spec.overrides))
        assert config.data.num_clients == 100 and config.sampling.fraction == 0.1
        assert config.data.partition == "pathological" and config.data.classes_per_client == 5
        assert config.data.augment == "crop-flip" and config.train.optimizer == "adam"
        assert config.experiment.rounds == cifar_protocol.CPU.rounds
        assert [(t.name, t.forward_cap, t.local_steps) for t in config.fleet.tiers] == [("strong", 8, 20), ("weak", 2, 20)]
        assert config.personalization.algorithm == spec.method.split("-", 1)[1]
        if spec.method.startswith("deq"):
            assert config.model.name == "mdeq-small-8"
        else:  # E1's headline CNN, the explicit model closest to the DEQ's accuracy
            assert config.model.name == "cnn-small" and config.model.options == {"widths": [32, 64]}
    gpu = build_e5(FULL, cifar=cifar_protocol.GPU)[len(plain):]
    assert all("experiment.device=cuda" in s.overrides for s in gpu)


def _personal(mean, tiers=None):
    return {"mean": mean, "p10": mean - 0.05, "clients": 9, "tiers": tiers or {"strong": mean, "weak": mean}}


def test_store_keeps_personal_accuracy_only_where_a_round_has_it():
    plain = {"round": 1, "accuracy": 0.5, "bytes_up": 1, "bytes_down": 1}
    personal = {**plain, "personal_accuracy": _personal(0.9), "unseen_accuracy": _personal(0.8)}
    rows = compact_rounds([plain, personal])
    assert "personal_accuracy" not in rows[0] and "unseen_accuracy" not in rows[0]
    assert rows[1]["personal_accuracy"]["mean"] == 0.9 and rows[1]["unseen_accuracy"]["mean"] == 0.8


def test_mb_to_target_and_tier_accuracy_read_the_personal_series():
    rounds = [{"round": r, "bytes_up": 1_000_000, "bytes_down": 500_000,
               "personal_accuracy": _personal(m, {"strong": m, "weak": w})}
              for r, m, w in [(1, 0.90, 0.80), (2, 0.96, 0.90), (3, 0.97, None), (4, 0.99, 0.98)]]
    assert personal_mb_to_target(rounds, 0.96) == pytest.approx(3.0)
    assert personal_mb_to_target(rounds, 0.995) is None
    assert tier_accuracy(rounds, "weak", last=3) == pytest.approx((0.90 + 0.98) / 2)  # rounds without the tier skipped
    assert tier_accuracy(rounds, "medium") is None
    assert recent_mean(rounds, last=2) == pytest.approx((0.97 + 0.99) / 2)
    assert recent_mean([{"round": 1, "accuracy": 0.5}]) is None  # no personalised figure recorded


def _run(method, mean, mb_per_round, reach_round, weak=None):
    rounds = [{"round": r, "accuracy": 0.1, "bytes_up": mb_per_round * 5e5, "bytes_down": mb_per_round * 5e5,
               "personal_accuracy": _personal(mean if r >= reach_round else 0.5, {"strong": mean, "weak": weak or mean})}
              for r in range(1, 6)]
    summary = {"model": "deq-mnist" if method.startswith("deq") else "cnn-small", "wall_seconds": 60.0,
               "personal_accuracy": _personal(mean), "unseen_accuracy": _personal(mean - 0.02),
               "megabytes": 5 * mb_per_round}
    return {"run_id": f"E5-mnist-{method}", "experiment": "E5", "method": method, "group": "labels=2",
            "dataset": "mnist", "seed": 0, "summary": summary, "rounds": rounds}


def test_section_answers_the_targets_from_fabricated_runs(tmp_path):
    results = [
        _run("deq-fedeq", 0.975, 0.2, 2, weak=0.96),       # 0.4 MB to 97%
        _run("cnn-fedrep", 0.98, 1.0, 2),                   # 2.0 MB to 97%: deq-fedeq x0.20, -0.5 pt
        _run("cnn-ditto", 0.972, 1.0, 1),
        _run("cnn-local", 0.99, 0.0, 1),                    # sends nothing: not a target baseline
        {**_run("deq-fedeq", 0.9, 1.0, 1), "dataset": "fashion-mnist", "run_id": "E5-f"},
        {**_run("deq-fedeq", 0.7, 1.0, 1), "dataset": "cifar10", "group": "labels=5", "run_id": "E5-c"},
    ]
    text = "\n".join(section_e5(results))
    assert "over the training clients it sampled (9 a run," in text
    assert "(8-9 a run," in "\n".join(section_e5(results + [{**results[0], "run_id": "E5-8", "rounds": [
        {**results[0]["rounds"][-1], "personal_accuracy": {**results[0]["rounds"][-1]["personal_accuracy"], "clients": 8}}]}]))
    assert "### cifar10, 5 labels per client (target 70%)" in text
    assert "| deq-fedeq | mdeq-small-8 |" in text.split("### cifar10")[1]
    assert text.index("### mnist, 2 labels per client (target 97%)") < text.index("### fashion-mnist")  # protocol order
    assert "deq-fedeq against cnn-fedrep" in text
    # last 5 rounds: deq (0.5 + 4 * 0.975) / 5, cnn-fedrep (0.5 + 4 * 0.98) / 5
    assert "mean -0.50 pt (last 5 rounds' mean -0.40 pt), MB to target x0.20: **holds**" in text
    assert "no communicating personalised CNN run stored" in text  # fashion-mnist: no CNN yet
    assert "deq-fedeq -1.5 (no)" in text and "cnn-fedrep +0.0" in text
    mnist = text.split("### mnist")[1]
    row = next(line for line in mnist.splitlines() if line.startswith("| deq-fedeq | deq-mnist"))
    assert "| 97.50 | 92.50 | 88.00 | 95.50 | 97.50 | n/a | 96.00 | 1.0 | 0.4 | 1.0 | 1 |" in row
    worse = [_run("deq-fedeq", 0.95, 0.2, 2), _run("cnn-fedrep", 0.98, 1.0, 2)]
    assert "**does not hold**" in "\n".join(section_e5(worse))
    (tmp_path / MEMORY_FILE).parent.mkdir()
    (tmp_path / MEMORY_FILE).write_text(json.dumps({"deq-mnist": 11.4e6, "cnn-small": 5.1e6}))
    expected = build_e5(QUICK)[:3]
    stored = [{**results[0], "run_id": expected[0].run_id}]
    written = write_e5(stored, tmp_path / "E5.md", expected).read_text()
    assert "deq-mnist 11.4 MB, cnn-small 5.1 MB" in written
    assert "1 of 3 E5 runs stored, 1 worker-minutes (mean 1.0 a run, one worker)." in written
    assert "Still to run: mnist: 2 runs, about 0.0 worker-hours at its stored runs' mean." in written
    assert f"Not yet run: `{expected[1].run_id}`, `{expected[2].run_id}`." in written
    with_cifar = expected + build_e5(QUICK, cifar=cifar_protocol.QUICK)[-1:]
    written = write_e5(stored, tmp_path / "E5.md", with_cifar).read_text()
    assert "cifar10: 1 runs, none stored to estimate from" in written


def test_cli_names_e5_and_writes_its_section(tmp_path, capsys):
    store = tmp_path / "store"
    (store / MEMORY_FILE).parent.mkdir(parents=True)
    (store / MEMORY_FILE).write_text(json.dumps({"deq-mnist": 1e6, "cnn-small": 1e6}))
    assert main(["reproduce", "--quick", "--only", "E5", "--report-only", "--out", str(tmp_path / "out"),
                 "--store", str(store)]) == 0
    written = (store / "E5.md").read_text()
    assert "No E5 run stored." in written and f"0 of {len(build_e5(QUICK))} E5 runs stored." in written
    assert main(["reproduce", "--quick", "--only", "E6", "--report-only", "--out", str(tmp_path / "out")]) != 0
    assert "valid choices: T0, T1, E1, E2, E3, E4, E1F, E2B, E2W, E5" in capsys.readouterr().err


def test_step_memory_grows_with_the_batch():
    from deqfl.experiments.reproduce.step_memory import step_peak_bytes

    small, large = step_peak_bytes("cnn-small", batch_size=2), step_peak_bytes("cnn-small", batch_size=256)
    assert 0 <= small < large < 500e6
    assert large - small > 256 * 16 * 28 * 28 * 4  # at least the first convolution's output, kept for backward
