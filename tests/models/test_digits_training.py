"""Real-data check: the DEQ classifier trained centrally on scikit-learn digits."""

import torch
from sklearn.datasets import load_digits
from torch.nn import functional as F

from deqfl.deq import solver_budget
from deqfl.models import accuracy, build_model, find_deq


def test_deq_classifier_learns_digits():
    digits = load_digits()
    x = (torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0 - 0.3) / 0.4
    y = torch.tensor(digits.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1400], perm[1400:]
    torch.manual_seed(0)
    model = build_model("deq-mnist", (1, 8, 8))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    deq = find_deq(model)
    for epoch in range(3):
        for idx in train[torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch))].split(32):
            with solver_budget(model) as solves:
                loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            assert solves.calls[0].stats.nfe <= deq.train_solver.max_iter
    assert accuracy(model, x[test], y[test]) >= 0.90
    model.eval()
    with solver_budget(model) as solves:
        model(x[test])
    assert solves.calls[0].stats.converged_fraction == 1.0  # the cell stayed contractive
