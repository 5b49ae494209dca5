"""SCAFFOLD's server side (Karimireddy et al., ICML 2020, Algorithm 1), wrapped around a
fusion as central DP is: `ScaffoldFusion(inner, num_clients)`.

The server holds the control variate c (one float64 tensor per floating key of the global
state, zeros at the start) and broadcasts it with the model (`server_extras`:
"control/<key>", cast to the global's dtype; it travels in the download, so it counts in
`bytes_down`). Each client uploads delta_c_i = c_i+ - c_i in its reply's extras
(`deqfl.fl.client.scaffold`; checked by the intake against what was broadcast). A round:

    x_new = inner.fuse(x, updates)                        (the configured rule; the paper's
                                                          is the mean with server_lr = eta_g)
    c_new = c + (1/N) sum_{i accepted} delta_c_i          (N: the registered clients)

so c stays the mean of the clients' c_i over all N clients when every reply is fused. A
round the inner fusion skips leaves c unchanged, as it leaves the model; so does a sum that
is not finite. A client whose update is not fused still keeps its own c_i+ (it is the
client's state), so c then drifts from the mean of the c_i until the client's next accepted
round, as it does for the paper's clients that drop out after updating.

State between rounds: the inner fusion's entries and "scaffold/control/<key>" (float64),
in `state_dict()` and so in checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from deqfl.fl.fusion.config import FusionConfig
from deqfl.fl.fusion.fusion import Fusion, FusionResult
from deqfl.fl.update import ClientUpdate, FusionContext

CONTROL = "control/"
"""Prefix of the control variates in the extras (`deqfl.fl.client.scaffold.CONTROL`)."""

STATE_PREFIX = "scaffold/"
"""Prefix of this wrapper's own entries in `state_dict()`."""


class ScaffoldFusion:
    """SCAFFOLD around `inner` (module docstring); the interface of `Fusion`, plus
    `server_extras`."""

    def __init__(self, inner: Fusion, num_clients: int) -> None:
        if num_clients < 1:
            raise ValueError(f"ScaffoldFusion needs the number of registered clients (>= 1), got {num_clients}")
        self.inner = inner
        self.num_clients = num_clients
        self.control: dict[str, torch.Tensor] = {}
        """The server's control variate c by model key (float64); empty until first used."""

    @property
    def config(self) -> FusionConfig:
        return self.inner.config

    def server_extras(self, global_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """c as broadcast: "control/<key>" in the global's dtype, for every floating key."""
        self._ensure(global_state)
        return {CONTROL + k: self.control[k].to(global_state[k].dtype) for k in self.control}

    def fuse(
        self, global_state: Mapping[str, torch.Tensor], updates: Sequence[ClientUpdate], ctx: FusionContext
    ) -> FusionResult:
        """The inner fusion, then c's update over its accepted clients (module docstring).
        Every accepted update must carry "control/<key>" extras for c's keys (the intake
        checked them against `server_extras`); one without is a server bug (ValueError)."""
        self._ensure(global_state)
        result = self.inner.fuse(global_state, updates, ctx)
        if result.skipped:
            return result
        by_client = {u.client_id: u for u in updates if isinstance(u, ClientUpdate)}
        total = {k: torch.zeros_like(c) for k, c in self.control.items()}
        for cid in result.accepted:
            extras = by_client[cid].extras
            missing = [CONTROL + k for k in total if CONTROL + k not in extras]
            if missing:
                raise ValueError(f"client {cid}'s accepted update carries no SCAFFOLD increment {missing[:3]}")
            for key, acc in total.items():
                acc.add_(extras[CONTROL + key].to(acc))
        new = {k: c + total[k] / self.num_clients for k, c in self.control.items()}
        if all(bool(torch.isfinite(v).all()) for v in new.values()):
            self.control = new
        return result

    def _ensure(self, global_state: Mapping[str, torch.Tensor]) -> None:
        if not self.control:
            self.control = {
                k: torch.zeros(v.shape, dtype=torch.float64, device=v.device)
                for k, v in global_state.items()
                if v.is_floating_point()
            }

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The inner fusion's entries and "scaffold/control/<key>" (copies)."""
        own = {STATE_PREFIX + CONTROL + k: v.clone() for k, v in self.control.items()}
        return {**self.inner.state_dict(), **own}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore what `state_dict` returned; the inner fusion checks its own entries."""
        mine = STATE_PREFIX + CONTROL
        unknown = [k for k in state if k.startswith(STATE_PREFIX) and not k.startswith(mine)]
        if unknown:
            raise ValueError(f"fusion state: unknown entries {unknown[:3]}; SCAFFOLD's start with {mine!r}")
        self.control = {k[len(mine):]: v.double().clone() for k, v in state.items() if k.startswith(mine)}
        self.inner.load_state_dict({k: v for k, v in state.items() if not k.startswith(STATE_PREFIX)})
