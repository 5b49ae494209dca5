"""Warm starts: each training solve starts from the sample's fixed point of the last time
this client trained on it, kept in the client's state (`train.warm_start`).

The `warm_start` mod (a built-in mod, `deqfl.fl.client.wrappers.builtin_mods`) gives
every DEQ layer of the round's model, in every training step, for the batch's samples
p_1..p_B (`LocalStep.batch`: positions in the client's training rows, the same sample at
the same position every round):

    z0_i = cache[layer][p_i]                        (a hit: p_i was cached)
    z0_i = the layer's cold start for x_i           (a miss: `DEQ.initial_state(inject(x))`)

and after the step's forward stores the layer's output (detached; f(z*) under JFB/IFT,
the solver's z otherwise) at those positions, so the next solve of that sample (later in
the round or in a later round) starts there. A batch of misses only runs exactly as
without warm starts (no z0 is passed); z0 has the cold start's memory layout (the solver
works in z0's layout: channels_last is the fast one of the cells on the CPU). Only training forwards are warm-started: the
residual probe, the held-back evaluation and the server's evaluation start cold, so the
reported residual and the quality weights still measure the model, not the cache. z0 is
detached (a cached point has no graph; a mixed batch's cold rows are computed without
one: the cells' cold start is zeros, which has none anyway).

The cache is the client's own state (`deqfl.fl.client_state`): saved with checkpoints and
restored on resume, never uploaded, not counted in `bytes_up`/`bytes_down`, not part of
the model. Its entries, for n training rows:

    "warm/rows"            int64 [n]            the client's dataset rows (`ClientData.train_indices`)
    "warm/z/<layer>"       dtype [n, *z.shape]  cached fixed points (`train.warm_start_dtype`)
    "warm/seen/<layer>"    bool [n]             which positions hold one

so a client stores n * sum over layers (numel(z) * itemsize + 1) + 8n bytes
(`cache_bytes_per_sample`; e.g. float16 at 16x14x14 is 6.3 KB a sample). float16 values
are clamped to its finite range; a sample whose fixed point is not finite is left
uncached. A cache whose rows differ from the client's, or whose shape differs from the
layer's fixed point, is dropped (those samples start cold).

Privacy and attacks: nothing special. The cache never leaves the client, so local or
central DP account for the upload alone; a malicious client warm-starts like an honest
one (label flips leave its inputs, hence its fixed points, unchanged) and tampers only
with its upload. A crashed round returns no state, so the client keeps its previous cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from deqfl.deq.budget import deq_layers, solver_budget
from deqfl.deq.module import DEQ
from deqfl.fl.client.hooks import LocalStep, StepHook
from deqfl.fl.client.mods import ClientFn, ClientRound
from deqfl.fl.update import ClientUpdate

PREFIX = "warm/"
"""Prefix of the cache's entries in the client state."""
ROWS, Z, SEEN = PREFIX + "rows", PREFIX + "z/", PREFIX + "seen/"
DTYPES = {"float16": torch.float16, "float32": torch.float32}
"""`train.warm_start_dtype` -> the cache's storage dtype."""


@dataclasses.dataclass
class _Layer:
    z: Tensor | None
    """[n, *shape] in the storage dtype; None until the layer's first stored fixed point."""
    seen: Tensor
    """bool [n]."""
    checked: bool = False
    """Whether `z`'s shape was checked against the layer's cold start this round."""
    memory_format: torch.memory_format = torch.contiguous_format
    """The cold start's memory layout (z0 follows it: the solver works in z0's layout)."""


class WarmStartCache(StepHook):
    """The cache of one client's round (module docstring): a step hook that arms the DEQ
    hooks (`attached`) for the step's batch between `before_forward` and `before_update`."""

    def __init__(self, rows: np.ndarray, dtype: torch.dtype, device: torch.device,
                 state: Mapping[str, Tensor] | None = None) -> None:
        self.rows = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        self.dtype, self.device = dtype, device
        self.layers: dict[str, _Layer] = {}
        self._batch: Tensor | None = None
        state = state or {}
        stored_rows = state.get(ROWS)
        if stored_rows is None or not torch.equal(stored_rows.cpu(), self.rows):
            return
        for key, z in state.items():
            if key.startswith(Z) and SEEN + key[len(Z):] in state:
                seen = state[SEEN + key[len(Z):]].to(device, torch.bool)
                if z.shape[0] == len(self.rows) and seen.shape == (len(self.rows),):
                    self.layers[key[len(Z):]] = _Layer(z.to(device, dtype, copy=True), seen.clone())

    def state(self) -> dict[str, Tensor]:
        """The cache as client-state entries (module docstring)."""
        out = {ROWS: self.rows.clone()}
        for name, layer in sorted(self.layers.items()):
            if layer.z is not None:
                out[Z + name], out[SEEN + name] = layer.z, layer.seen
        return out

    def before_forward(self, step: LocalStep) -> None:
        self._batch = step.batch

    def before_update(self, step: LocalStep) -> None:
        self._batch = None

    @contextlib.contextmanager
    def attached(self, model: nn.Module) -> Iterator[None]:
        """Warm-start every DEQ of `model` while armed; the hooks are removed on exit."""
        handles = []
        try:
            for name, deq in deq_layers(model):
                layer = self.layers.setdefault(name, _Layer(None, torch.zeros(len(self.rows), dtype=torch.bool, device=self.device)))
                handles.append(deq.register_forward_pre_hook(self._pre_hook(deq, layer), with_kwargs=True))
                handles.append(deq.register_forward_hook(self._post_hook(layer)))
            yield
        finally:
            self._batch = None
            for handle in handles:
                handle.remove()

    def _pre_hook(self, deq: DEQ, layer: _Layer):
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            batch = self._batch
            if batch is None or layer.z is None or len(args) > 1 or kwargs.get("z0") is not None:
                return None
            hits = layer.seen[batch]
            if not bool(hits.any()):
                return None
            if bool(hits.all()) and layer.checked:
                z0 = layer.z[batch].to(args[0].dtype).contiguous(memory_format=layer.memory_format)
            else:
                with torch.no_grad():
                    z0 = deq.initial_state(deq.inject(args[0])).detach().clone()
                if tuple(z0.shape[1:]) != tuple(layer.z.shape[1:]):
                    layer.z, layer.seen = None, torch.zeros_like(layer.seen)
                    return None
                layer.checked, layer.memory_format = True, _memory_format(z0)
                z0[hits] = layer.z[batch[hits]].to(z0.dtype)
            return args, {**kwargs, "z0": z0}

        return hook

    def _post_hook(self, layer: _Layer):
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            batch = self._batch
            if batch is None:
                return
            z = output.detach()
            if layer.z is None or tuple(layer.z.shape[1:]) != tuple(z.shape[1:]):
                layer.z = torch.zeros((len(self.rows), *z.shape[1:]), dtype=self.dtype, device=self.device)
                layer.seen = torch.zeros_like(layer.seen)
            finite = torch.isfinite(z.reshape(len(z), -1)).all(1)
            limit = torch.finfo(self.dtype).max
            layer.z[batch] = torch.where(finite.view(-1, *[1] * (z.dim() - 1)), z.clamp(-limit, limit), 0).to(self.dtype)
            layer.seen[batch] = finite

        return hook


def _memory_format(z: Tensor) -> torch.memory_format:
    channels_last = z.dim() == 4 and z.is_contiguous(memory_format=torch.channels_last) and not z.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def warm_start(round_: ClientRound, call_next: ClientFn) -> ClientUpdate:
    """The warm-start mod (module docstring): the round's cache as a step hook around
    training, written back into the returned client state."""
    options = round_.task.options
    device = round_.y_train.device
    cache = WarmStartCache(round_.data.train_indices, DTYPES[options.warm_start_dtype], device, round_.client_state)
    with cache.attached(round_.model):
        update = call_next(round_.replace(step_hooks=(*round_.step_hooks, cache)))
    kept = {k: v for k, v in (update.client_state or {}).items() if not k.startswith(PREFIX)}
    return dataclasses.replace(update, client_state={**kept, **cache.state()})


def fixed_point_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Each DEQ layer's per-sample fixed-point shape, from one solve iteration on a zero
    input (eval mode, no graph; the model's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        parameter = next(model.parameters())
        x = torch.zeros((1, *input_shape), dtype=parameter.dtype, device=parameter.device)
        with torch.no_grad(), solver_budget(model, 1, keep_fixed_points=True) as solves:
            model(x)
    finally:
        model.train(was_training)
    return {call.layer: tuple(call.fixed_point.shape[1:]) for call in solves.calls}


def cache_bytes_per_sample(model: nn.Module, input_shape: tuple[int, ...], dtype: str) -> int:
    """Bytes of client state the cache holds per training row (module docstring)."""
    itemsize = torch.empty((), dtype=DTYPES[dtype]).element_size()
    shapes = fixed_point_shapes(model, input_shape)
    return 8 + sum(int(np.prod(shape)) * itemsize + 1 for shape in shapes.values())
