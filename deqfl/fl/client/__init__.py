"""A client's round: local training with pluggable loss terms and step hooks, wrapped in
client mods (docs/EXTENDING.md: "Add a client mod", "Add a loss term").

- `task`: what the server hands a client (ClientData, ClientTask, TrainOptions).
- `loss_terms`: the terms local training minimises (task loss, FedProx, Jacobian penalty).
- `hooks`: optimiser-step hooks.
- `optimizers`: the client optimisers (`train.optimizer`: sgd, adam, adamw), one file each.
- `mods`: the mod interface (ClientRound, ClientMod, chain).
- `wrappers`: the built-in mods (width slicing, attacks, local DP, injected crashes).
- `scaffold`: SCAFFOLD's client mod (control-variate correction, the client's c_i).
- `gradient_mode`: the tier's gradient mode and its check against the model's.
- `train`: honest local training and `train_client`.
"""

from deqfl.fl.client.gradient_mode import tier_backward
from deqfl.fl.client.hooks import LocalStep, StepHook
from deqfl.fl.client.loss_terms import JacobianPenalty, LossInputs, LossTerm, ProximalTerm, TaskLoss, default_loss_terms
from deqfl.fl.client.mods import ClientFn, ClientMod, ClientRound, chain
from deqfl.fl.client.task import ClientData, ClientTask, TrainOptions, client_generator, local_step_count
from deqfl.fl.client.train import local_training, train_client

__all__ = [
    "ClientData",
    "ClientFn",
    "ClientMod",
    "ClientRound",
    "ClientTask",
    "JacobianPenalty",
    "LocalStep",
    "LossInputs",
    "LossTerm",
    "ProximalTerm",
    "StepHook",
    "TaskLoss",
    "TrainOptions",
    "chain",
    "client_generator",
    "default_loss_terms",
    "local_step_count",
    "local_training",
    "tier_backward",
    "train_client",
]
