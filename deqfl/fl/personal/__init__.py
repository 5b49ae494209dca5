"""Personalised federated learning: a shared part averaged by the server, a personal part
kept by each client (docs/EXTENDING.md, "Add a personalised algorithm").

- `split`: which model entries are shared and which personal (head, FedBN's norms).
- `base`: the `PersonalAlgorithm` interface, its registry, the shared training steps.
- one file per algorithm: `fedavg`, `fedavg_ft` (FedAvg-FT), `local`, `fedper`, `fedrep`,
  `ditto`, `fedeq` (FeDEQ's ADMM consensus).
- `terms`: their loss terms (Ditto's proximal pull, the augmented Lagrangian).
- `test_split`: each client's test rows, drawn by its label distribution.
- `mod`: the client mod and the wire (what travels, how a download is completed).
- `summary`: the round record's personalised accuracies.
- `unseen`: clients held out of training, fitted and evaluated by the server.
"""

import deqfl.fl.client  # noqa: F401  (first: the client mods import `mod` from this package)
from deqfl.fl.personal import ditto, fedavg, fedavg_ft, fedeq, fedper, fedrep, local  # noqa: F401  (registers the built-ins)
from deqfl.fl.personal.base import (
    DUAL,
    PERSONAL,
    PersonalAlgorithm,
    PersonalOptions,
    algorithm_class,
    algorithm_names,
    register_personalization,
)
from deqfl.fl.personal.split import Split, split_model

__all__ = [
    "DUAL",
    "PERSONAL",
    "PersonalAlgorithm",
    "PersonalOptions",
    "Split",
    "algorithm_class",
    "algorithm_names",
    "register_personalization",
    "split_model",
]
