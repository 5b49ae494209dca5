"""A suite run whose configuration another table's stored run already ran is stored from it, not rerun."""

import json

from deqfl.experiments.reproduce.runner import run_suite
from deqfl.experiments.reproduce.store import find_twin, result_path
from deqfl.experiments.reproduce.suite import RunSpec

TINY = ("data.dataset=digits", "data.num_clients=4", "experiment.rounds=1", "data.eval_subset=0",
        "evaluation.anytime_every=0", "train.residual_samples=16", "model.name=cnn-small")


def test_a_twin_configuration_is_stored_from_the_run_that_ran_it(tmp_path):
    store, out = tmp_path / "store", tmp_path / "out"
    first = RunSpec("E1", "cnn", "digits", 0, TINY)
    run_suite([first], store, out, {}, log=lambda _: None)
    twin = RunSpec("E2", "cnn-partial-work", "digits", 0, tuple(reversed(TINY)), "all-strong")  # same set of overrides
    other_seed = RunSpec("E2", "cnn-partial-work", "digits", 1, TINY, "all-strong")
    lines: list[str] = []
    results = run_suite([twin, other_seed], store, out, {}, log=lines.append)
    assert sorted(r["run_id"] for r in results) == sorted([twin.run_id, other_seed.run_id])
    assert not (out / "runs" / twin.run_id).exists()  # not run
    assert (out / "runs" / other_seed.run_id).exists()  # another seed is another configuration: run
    original = json.loads(result_path(store, first).read_text())
    copied = json.loads(result_path(store, twin).read_text())
    assert copied["same_as"] == first.run_id and copied["summary"] == original["summary"]
    assert copied["rounds"] == original["rounds"] and copied["date"] == original["date"]
    assert (copied["experiment"], copied["method"], copied["group"]) == ("E2", "cnn-partial-work", "all-strong")
    assert any(f"the same configuration as the stored {first.run_id}" in line for line in lines)


def test_no_twin_when_one_override_differs():
    stored = [{"run_id": "E1-x", "dataset": "digits", "seed": 0, "overrides": list(TINY)}]
    assert find_twin(stored, RunSpec("E2", "m", "digits", 0, TINY[:-1] + ("model.name=deq-small",))) is None
    assert find_twin(stored, RunSpec("E2", "m", "mnist", 0, TINY)) is None
    assert find_twin(stored, RunSpec("E2", "m", "digits", 0, TINY))["run_id"] == "E1-x"
