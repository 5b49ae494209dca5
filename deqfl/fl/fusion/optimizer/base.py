"""`ServerOptimizer`: how the fused delta moves the global model, and the state it keeps.

The aggregate of a round is a delta d (float64, one tensor per floating-point key of the
global model x, in float64); a server optimiser turns (x, d) into the new global model.
Reddi et al. ("Adaptive Federated Optimization", ICLR 2021) treat -d as a pseudo-gradient;
`sgd` with step 1 is FedAvg.

Contract:
- `propose(x, d)` is pure: it returns the new model and the state it would hold after
  this step, and changes nothing; `Fusion` calls `accept(step)` only when the round is
  not skipped. A skipped round (too few valid updates, or a non-finite result) therefore
  leaves the state unchanged, and the step counter of bias-corrected rules does not move.
- State is owned by the optimiser, created on the first step (zeros, shaped like d), and
  exposed flat: buffers as "<buffer>/<parameter key>" (float64), scalars under their name
  (int64, e.g. "step"). `state_dict` returns copies; `load_state_dict` validates and
  copies (ValueError naming the bad entry), so a checkpoint round-trips bitwise.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch

from deqfl.fl.fusion.base import RuleOptions

Tensors = dict[str, torch.Tensor]


class OptimizerOptions(RuleOptions):
    """Base of every optimiser's typed parameters (unknown keys are errors)."""


@dataclass(frozen=True)
class Step:
    """What `propose` returns: the new model and the state after this step."""

    params: Tensors
    """New floating-point tensors of the global model, float64."""
    state: Tensors
    """The optimiser's state if this step is accepted."""


class ServerOptimizer(ABC):
    """Base class; subclasses set `Options`, `BUFFERS`, `SCALARS` and `propose`."""

    Options: ClassVar[type[OptimizerOptions]] = OptimizerOptions
    BUFFERS: ClassVar[tuple[str, ...]] = ()
    """Per-parameter float64 buffers (e.g. "m", "v")."""
    SCALARS: ClassVar[tuple[str, ...]] = ()
    """int64 scalar counters (e.g. "step")."""

    def __init__(self, options: OptimizerOptions) -> None:
        self.options = options
        self._state: Tensors = {}

    @abstractmethod
    def propose(self, params: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]) -> Step:
        """The step from `params` (float64) along the fused `delta`; changes nothing."""

    def accept(self, step: Step) -> None:
        """Make `step.state` the optimiser's state (the round was not skipped)."""
        self._state = step.state

    def buffer(self, name: str, delta: Mapping[str, torch.Tensor]) -> Tensors:
        """Buffer `name` per key of `delta`, on its device (zeros before the first step);
        ValueError when the state was made for other keys (a model/state mismatch)."""
        held = {k.partition("/")[2]: v for k, v in self._state.items() if k.startswith(name + "/")}
        if not held:
            return {k: torch.zeros_like(d) for k, d in delta.items()}
        if set(held) != set(delta):
            raise ValueError(
                f"server optimiser state {name!r} holds keys {sorted(held)}, but the fused "
                f"delta has {sorted(delta)}"
            )
        return {k: held[k].to(d.device) for k, d in delta.items()}

    def scalar(self, name: str) -> int:
        """Counter `name` (0 before the first step)."""
        value = self._state.get(name)
        return 0 if value is None else int(value)

    def state_dict(self) -> Tensors:
        return {k: v.clone() for k, v in self._state.items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Replace the state by a copy of `state` (as `state_dict` gave it); ValueError
        naming the entry if a key, type, dtype or value does not fit this optimiser."""
        loaded: Tensors = {}
        for key, value in state.items():
            buffer, _, param = key.partition("/")
            scalar = key in self.SCALARS
            if not (scalar or (buffer in self.BUFFERS and param)):
                raise ValueError(
                    f"server optimiser {type(self).__name__}: unknown state entry {key!r}; expected "
                    f"'<buffer>/<key>' with buffer in {list(self.BUFFERS)} or one of {list(self.SCALARS)}"
                )
            dtype = torch.int64 if scalar else torch.float64
            if not isinstance(value, torch.Tensor) or value.dtype != dtype or (scalar and value.dim() != 0):
                raise ValueError(f"server optimiser state {key!r}: expected a {'scalar ' if scalar else ''}{dtype} tensor")
            if not scalar and not bool(torch.isfinite(value).all()):
                raise ValueError(f"server optimiser state {key!r} has non-finite values")
            loaded[key] = value.detach().clone()
        self._check_complete(loaded)
        self._state = loaded

    def _check_complete(self, state: Tensors) -> None:
        """Every buffer over the same keys, and the counters present, or nothing at all."""
        if not state:
            return
        key_sets = [{k.partition("/")[2] for k in state if k.startswith(b + "/")} for b in self.BUFFERS]
        same = all(keys and keys == key_sets[0] for keys in key_sets)
        if not same or not all(s in state for s in self.SCALARS):
            raise ValueError(
                f"server optimiser {type(self).__name__}: incomplete state; expected buffers "
                f"{list(self.BUFFERS)} over the same keys and counters {list(self.SCALARS)}, got "
                f"{sorted(state)}"
            )


def flat(**groups: Mapping[str, torch.Tensor] | torch.Tensor) -> Tensors:
    """Flat state from buffers (dicts, named "<group>/<key>") and scalars (tensors)."""
    out: Tensors = {}
    for group, value in groups.items():
        if isinstance(value, torch.Tensor):
            out[group] = value
        else:
            out.update({f"{group}/{k}": v for k, v in value.items()})
    return out


def first_moment(m: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor], beta_1: float) -> Tensors:
    """m_t = beta_1 m_{t-1} + (1 - beta_1) d_t (FedOpt's momentum, Reddi et al. Alg. 2)."""
    return {k: beta_1 * m[k] + (1 - beta_1) * delta[k] for k in delta}


def adaptive_step(
    params: Mapping[str, torch.Tensor], m: Mapping[str, torch.Tensor], v: Mapping[str, torch.Tensor],
    lr: float, tau: float,
) -> Tensors:
    """x_{t+1} = x_t + lr * m_t / (sqrt(v_t) + tau) (Reddi et al. Alg. 2, Flower's FedOpt)."""
    return {k: params[k] + lr * m[k] / (v[k].sqrt() + tau) for k in m}
