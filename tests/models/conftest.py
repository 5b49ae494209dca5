"""Shared by the model tests: a short Adam training on synthetic 32x32 colour images."""

import pytest
import torch
from torch.nn import functional as F

from deqfl.data import load_dataset
from deqfl.deq import solver_budget
from deqfl.models import accuracy


def _train_on_synthetic_cifar(model, noise: float, forward_cap: int | None = None, epochs: int = 3):
    """(per-step training losses, test accuracy) of `model` after `epochs` of Adam (lr 3e-3,
    batch 25) on 200 synthetic 3x32x32 images of pixel noise `noise` (100 test images),
    every DEQ solve capped at `forward_cap` (None: the model's own budget)."""
    data = load_dataset("synthetic", num_train=200, num_test=100, image_shape=(3, 32, 32), noise=noise, seed=1)
    x = (torch.tensor(data.x_train, dtype=torch.float32) / 255 - 0.5) / 0.25
    y = torch.tensor(data.y_train)
    x_test = (torch.tensor(data.x_test, dtype=torch.float32) / 255 - 0.5) / 0.25
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for epoch in range(epochs):
        for idx in torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch)).split(25):
            with solver_budget(model, forward_cap=forward_cap):
                loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return losses, accuracy(model, x_test, torch.tensor(data.y_test))


@pytest.fixture()
def train_on_synthetic_cifar():
    return _train_on_synthetic_cifar
