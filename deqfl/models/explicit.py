"""Explicit baselines: a plain CNN and a GroupNorm ResNet, each in two widths, and the
CIFAR ResNets of He et al. (ResNet-8, -14, -20)."""

from __future__ import annotations

import math

from torch import Tensor, nn
from torch.nn import functional as F

from deqfl.models.stems import AdaptiveAvgPool, groups_for


class ScaledReLU(nn.Module):
    """relu(x) / rate in training, relu(x) in evaluation: HeteroFL's scaler (Diao et al.,
    ICLR 2021), which keeps a width-`rate` sub-model's activations on the full model's
    scale while it trains. rate = 1 is a plain ReLU."""

    def __init__(self, rate: float = 1.0) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(x)
        return y / self.rate if self.training and self.rate != 1.0 else y


class CNN(nn.Module):
    """conv3x3(c -> w1) + relu + maxpool2, conv3x3(w1 -> w2) + relu + maxpool2, optional hidden
    linear layer, linear classifier (on 28x28: the 20,490-parameter CNN of DESIGN 6b for
    widths (16, 32) and no hidden layer).

    `narrowed(r)` is the HeteroFL sub-model of width ratio r: every hidden width w becomes
    ceil(r w), and its parameters are the leading slices of this model's (the flatten is
    channel-major, so the first ceil(r w2) channels are the first features of the head)."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, widths: tuple[int, int],
                 hidden: int = 0, rate: float = 1.0):
        super().__init__()
        self.input_shape, self.num_classes, self.widths, self.hidden = input_shape, num_classes, widths, hidden
        c, h, w = input_shape
        w1, w2 = widths
        features = w2 * (h // 4) * (w // 4)
        layers: list[nn.Module] = [
            nn.Conv2d(c, w1, 3, padding=1), ScaledReLU(rate), nn.MaxPool2d(2),
            nn.Conv2d(w1, w2, 3, padding=1), ScaledReLU(rate), nn.MaxPool2d(2),
            nn.Flatten(),
        ]
        if hidden:
            layers += [nn.Linear(features, hidden), ScaledReLU(rate), nn.Linear(hidden, num_classes)]
        else:
            layers.append(nn.Linear(features, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def narrowed(self, ratio: float) -> "CNN":
        """A fresh CNN of width ratio `ratio` in (0, 1] (its weights are to be loaded)."""
        def scale(width: int) -> int:
            return max(1, math.ceil(ratio * width))

        return CNN(self.input_shape, self.num_classes, (scale(self.widths[0]), scale(self.widths[1])),
                   scale(self.hidden) if self.hidden else 0, rate=ratio)


class BasicBlock(nn.Module):
    """Pre-activation-free ResNet basic block with GroupNorm: relu(x' + GN(conv(relu(GN(conv x)))))."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(groups_for(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(groups_for(cout), cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.GroupNorm(groups_for(cout), cout))

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.shortcut(x) + self.norm2(self.conv2(h)))


class ResNet(nn.Module):
    """stem conv3x3 + GN + relu + maxpool2, one basic block per width (stride 2 from the
    second on), average pool to a `pool` x `pool` map, linear.

    The spatial pooled head matters at these depths: with a global average pool (pool=1)
    the two-block MNIST ResNet reached 25-38% after 94 SGD steps on 3,000 MNIST digits,
    where this head reached 90% and cnn-small 92% (lr 0.03, momentum 0.9)."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, widths: tuple[int, ...], pool: int = 4):
        super().__init__()
        c = input_shape[0]
        self.stem = nn.Sequential(
            nn.Conv2d(c, widths[0], 3, padding=1, bias=False), nn.GroupNorm(groups_for(widths[0]), widths[0]),
            nn.ReLU(), nn.MaxPool2d(2),
        )
        blocks = [BasicBlock(widths[max(i - 1, 0)], wd, 1 if i == 0 else 2) for i, wd in enumerate(widths)]
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            AdaptiveAvgPool(pool), nn.Flatten(), nn.Linear(widths[-1] * pool * pool, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))


class CifarBlock(nn.Module):
    """He et al.'s CIFAR basic block with GroupNorm and the parameter-free shortcut ("option A"):
    relu(s(x) + GN(conv(relu(GN(conv_stride(x)))))), s(x) = x, or for a stride-2 / widening
    block x subsampled 2x and zero-padded to cout channels (half the new channels on each side)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(groups_for(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(groups_for(cout), cout)
        self.stride, self.pad = stride, ((cout - cin) // 2, cout - cin - (cout - cin) // 2)

    def shortcut(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, *self.pad)) if any(self.pad) else x

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.shortcut(x) + self.norm2(self.conv2(h)))


class CifarResNet(nn.Module):
    """The CIFAR ResNet-(6n+2) of He et al. (CVPR 2016, section 4.2), GroupNorm for BatchNorm:
    conv3x3(c -> w_1) + GN + relu, then one stage per width w_s of n CifarBlocks (the first of
    each stage after the first at stride 2), global average pool, linear. Widths (16, 32, 64)
    and n = 3, 2, 1 give ResNet-20, -14, -8 (269,722 parameters for ResNet-20 with 10 classes,
    the paper's 0.27M; GroupNorm's affine parameters number BatchNorm's)."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, blocks: int,
                 widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        c = input_shape[0]
        self.stem = nn.Sequential(
            nn.Conv2d(c, widths[0], 3, padding=1, bias=False), nn.GroupNorm(groups_for(widths[0]), widths[0]), nn.ReLU()
        )
        layers, cin = [], widths[0]
        for s, width in enumerate(widths):
            for b in range(blocks):
                layers.append(CifarBlock(cin, width, 2 if s > 0 and b == 0 else 1))
                cin = width
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Sequential(AdaptiveAvgPool(1), nn.Flatten(), nn.Linear(widths[-1], num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))
