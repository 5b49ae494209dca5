"""Keeping a DEQ cell contractive, and measuring how contractive it is.

* `bounded_weight_norm(module, max_norm)`: weight normalisation with a bounded gain,
      W = max_norm * sigmoid(g) * V / ||V||_F     (g scalar, V a tensor like W),
  registered through `torch.nn.utils.parametrize`, so it has parameters (g, V) and no
  buffers: it survives copy.deepcopy and state_dict round trips and the whole state can be
  averaged. For a 3x3 convolution ||conv||_2 <= 3 ||W||_F < 3 max_norm (in practice about
  0.5 ||W||_F), so two such convolutions with 1-Lipschitz activations between them give a
  cell whose Lipschitz constant in z is bounded by construction.
* `spectral_norm` from torch.nn.utils.parametrizations is also usable; its power-iteration
  vectors are buffers (`..._u`, `..._v`) that `deqfl.models.federated_state` leaves out.
* `jacobian_penalty`: Hutchinson estimate of ||J_f||_F^2 / dim at z (with graph).
* `contraction_estimate`: power iteration for ||J_f||_2 at z, per sample.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from deqfl.errors import ConfigError


class BoundedWeightNorm(nn.Module):
    """Parametrization W = max_norm * sigmoid(g) * V / ||V||_F (see module docstring)."""

    def __init__(self, max_norm: float) -> None:
        super().__init__()
        if not max_norm > 0:
            raise ConfigError(f"bounded weight norm needs max_norm > 0, got {max_norm!r}")
        self.max_norm = float(max_norm)

    def forward(self, g: Tensor, v: Tensor) -> Tensor:
        return self.max_norm * torch.sigmoid(g) * v / torch.linalg.vector_norm(v)

    def right_inverse(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        ratio = (torch.linalg.vector_norm(weight) / self.max_norm).clamp(1e-4, 1 - 1e-4)
        return torch.logit(ratio).reshape(()), weight


def bounded_weight_norm(module: nn.Module, max_norm: float, name: str = "weight") -> nn.Module:
    """Reparametrize `module.<name>` with BoundedWeightNorm(max_norm); its current norm is
    kept when below max_norm, otherwise shrunk to just under it."""
    parametrize.register_parametrization(module, name, BoundedWeightNorm(max_norm), unsafe=True)
    return module


def jacobian_penalty(
    f: Callable[[Tensor], Tensor], z: Tensor, n_samples: int = 1, generator: torch.Generator | None = None
) -> Tensor:
    """Hutchinson estimate of ||J_f(z)||_F^2 / dim, averaged over the batch:
    E_eps ||eps^T J||^2 with eps ~ N(0, I), n_samples probes drawn from `generator` on its
    own device and moved to z's (the global RNG of z's device when None). Differentiable
    (create_graph)."""
    z = z.detach().requires_grad_()
    draw_on = generator.device if generator is not None else z.device
    with torch.enable_grad():
        fz = f(z)
        total = z.new_zeros(())
        for _ in range(n_samples):
            eps = torch.randn(fz.shape, generator=generator, dtype=fz.dtype, device=draw_on).to(fz.device)
            (vjp,) = torch.autograd.grad(fz, z, eps, create_graph=True)
            total = total + vjp.pow(2).sum() / fz.numel()
    return total / n_samples


def contraction_estimate(f: Callable[[Tensor], Tensor], z: Tensor, n_iter: int = 10) -> Tensor:
    """Per-sample ||J_f(z)||_2 by power iteration on J^T J. J v comes from the double-vjp
    trick (J v = d/dw <J^T w, v>), J^T w from a vjp: three backward passes a step, one
    forward in all. Below 1 means f is locally contractive at z. Deterministic (fixed seed)."""
    batch = z.shape[0]
    gen = torch.Generator(device=z.device).manual_seed(0)
    v = torch.randn(z.shape, generator=gen, dtype=z.dtype, device=z.device)
    sigma = z.new_zeros(batch)
    with torch.enable_grad():
        z = z.detach().requires_grad_()
        fz = f(z)
        w = torch.zeros_like(fz, requires_grad=True)
        (jt_w,) = torch.autograd.grad(fz, z, w, create_graph=True)
        for _ in range(n_iter):
            norm = torch.linalg.vector_norm(v.reshape(batch, -1), dim=1).clamp_min(1e-30)
            v = v / norm.view(-1, *[1] * (z.dim() - 1))
            (jv,) = torch.autograd.grad(jt_w, w, v, retain_graph=True)
            (v,) = torch.autograd.grad(fz, z, jv, retain_graph=True)
            sigma = torch.linalg.vector_norm(v.reshape(batch, -1), dim=1).sqrt()
    return sigma.detach()
