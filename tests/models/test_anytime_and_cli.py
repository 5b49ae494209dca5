"""Anytime evaluation and the `deqfl models` command."""

import argparse

import torch

from deqfl.cli import cmd_models
from deqfl.models import accuracy_at_budgets, build_model, find_deq


def test_explicit_model_has_one_accuracy_at_every_budget():
    torch.manual_seed(0)
    model = build_model("cnn-small", (1, 8, 8))
    x, y = torch.randn(20, 1, 8, 8), torch.randint(0, 10, (20,))
    result = accuracy_at_budgets(model, x, y, budgets=(1, 4))
    assert list(result) == [1, 4] and result[1] == result[4]


def test_deq_is_evaluated_at_exactly_each_budget():
    torch.manual_seed(0)
    model = build_model("deq-mnist", (1, 8, 8))
    deq = find_deq(model)
    x, y = torch.randn(20, 1, 8, 8), torch.randint(0, 10, (20,))
    seen, cell_calls = [], []

    def count_model_call(*_):
        seen.append(len(cell_calls))
        cell_calls.clear()

    deq.cell.register_forward_hook(lambda *_: cell_calls.append(1))
    model.register_forward_hook(count_model_call)
    result = accuracy_at_budgets(model, x, y, budgets=(1, 3, 9), batch_size=8)
    assert list(result) == [1, 3, 9] and all(0 <= a <= 1 for a in result.values())
    assert seen == [1] * 3 + [3] * 3 + [9] * 3
    assert model.training and deq.eval_solver.max_iter == 16


def test_models_command_prints_every_model(capsys):
    parser = argparse.ArgumentParser()
    cmd_models.register(parser.add_subparsers())
    args = parser.parse_args(["models"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "deq-mnist" in out and "7,436" in out and "30,936" in out and "unrolled-cifar" in out
