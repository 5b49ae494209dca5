"""The gradient mode a client trains with: its tier's, checked against the model's own.

Rule: in federated training the tier decides the gradient mode (`backward`, with
`backward_steps` as phantom's k or IFT's backward cap and `phantom_tau`), because the
simulated clock charges the tier's mode. A DEQ layer built with the default mode, JFB(),
takes the tier's mode. A layer built with another mode (a model option `backward="ift"`,
say) whose kind differs from the tier's is a contradiction and raises ConfigError instead
of being silently replaced; with the same kind the tier's options apply.
"""

from __future__ import annotations

from torch import nn

from deqfl.deq.backward import JFB, BackwardMode
from deqfl.deq.budget import deq_layers
from deqfl.errors import ConfigError
from deqfl.fl.profiles import TierConfig


def tier_backward(tier: TierConfig, model: nn.Module) -> BackwardMode:
    """The tier's gradient mode for every DEQ of `model` (ConfigError on a contradiction)."""
    mode = tier.gradient_mode()
    for name, deq in deq_layers(model):
        own = deq.backward
        if own != JFB() and own.name != mode.name:
            layer = name or "the model"
            raise ConfigError(
                f"DEQ layer {layer!r} is built with gradient mode {own.name!r} but tier {tier.name!r} "
                f"trains with {mode.name!r}: in federated training the tier sets the gradient mode; "
                f"set `backward = \"{own.name}\"` on the fleet's tiers (fleet.tiers[].backward) "
                "or drop the model option `backward`"
            )
    return mode
