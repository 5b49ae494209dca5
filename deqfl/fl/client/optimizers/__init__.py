"""Client optimisers (`train.optimizer`): sgd (default), adam, adamw; importing this
package registers them, and every other module of it too, so adding an optimiser is
adding one file (docs/EXTENDING.md, "Add a client optimiser")."""

import importlib
import pkgutil

from deqfl.fl.client.optimizers.base import (
    ClientOptimizer,
    ClientOptimizerOptions,
    canonical_options,
    client_optimizer,
    client_optimizer_names,
    make_client_optimizer,
    register_client_optimizer,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "ClientOptimizer",
    "ClientOptimizerOptions",
    "canonical_options",
    "client_optimizer",
    "client_optimizer_names",
    "make_client_optimizer",
    "register_client_optimizer",
]
