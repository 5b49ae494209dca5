"""`deqfl bench cifar-models`: its work counts are right and it writes its JSON."""

import json

import pytest
import torch

from deqfl.bench.cifar_models_bench import SHAPE, _build
from deqfl.models import build_model
from deqfl.models.macs import cell_macs, correction_point_macs, macs_at_iterations, training_macs
from deqfl.cli.main import main


def test_explicit_training_macs_are_three_forwards_less_the_first_input_gradient():
    w1, w2 = 8, 16
    conv1, conv2, head = 32 * 32 * 27 * w1, 16 * 16 * 9 * w1 * w2, w2 * 64 * 10
    # backward: weight gradients of all three, input gradients of conv2 and the head (not of the image)
    assert training_macs(_build("cnn-small/8-16"), SHAPE, None) == 3 * (conv1 + conv2 + head) - conv1


def test_deq_training_macs_grow_by_one_cell_evaluation_per_iteration():
    model = _build("mdeq-tiny-8")
    per_cell = cell_macs(model, SHAPE)
    extra = training_macs(model, SHAPE, 12) - training_macs(model, SHAPE, 4)
    assert 8 * per_cell <= extra <= 1.1 * 8 * per_cell  # Anderson's mixing and small solves add a little


def test_macs_at_mean_iterations_interpolate_the_capped_counts():
    model, shape = build_model("deq-mnist"), (1, 28, 28)
    per_cell = cell_macs(model, shape)
    assert macs_at_iterations(model, shape, 1.0) == training_macs(model, shape, 1)
    assert macs_at_iterations(model, shape, 3.5) == training_macs(model, shape, 1) + 2.5 * per_cell
    assert abs(macs_at_iterations(model, shape, 6.0) - training_macs(model, shape, 6)) <= 0.05 * per_cell * 6
    cnn = build_model("cnn-small")
    assert macs_at_iterations(cnn, shape, None) == training_macs(cnn, shape, None)


def test_bench_writes_its_figures(tmp_path):
    out = tmp_path / "cifar.json"
    assert main(["bench", "cifar-models", "--models", "mdeq-tiny-8", "resnet-20", "--caps", "4", "--batches", "4",
                 "--steps", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    deq, resnet = report["models"]["mdeq-tiny-8"], report["models"]["resnet-20"]
    assert resnet["params"] == 269_722 and resnet["cpu_seconds_relative_to_resnet20"]["explicit"]["4"] == 1.0
    assert set(deq["seconds_per_sample"]) == {"cap4"} and deq["seconds_per_sample"]["cap4"]["4"] > 0
    assert deq["cpu_seconds_per_sample"]["cap4"]["4"] > 0
    assert 1 <= deq["iterations_at_init"] <= 18


def test_a_correction_point_costs_one_cell_training_step_without_its_solve():
    torch.manual_seed(0)
    model, shape = build_model("deq-mnist", channels=4), (1, 28, 28)
    point = correction_point_macs(model, shape)
    # a replayed point runs the stem, one differentiable cell application and the head,
    # forward and backward: a training step at cap 1 less nothing but the solve's one
    # evaluation, which the replay replaces
    assert cell_macs(model, shape) < point <= training_macs(model, shape, 1)
    with pytest.raises(ValueError, match="needs a DEQ"):
        correction_point_macs(build_model("cnn-small"), shape)
