"""Built-in server optimisers; importing this package registers them.

sgd (default, stateless; step `fusion.server_lr`), fedavgm, fedadam, fedyogi, fedadagrad
(stateful; Reddi et al., "Adaptive Federated Optimization", ICLR 2021). Each takes its
parameters from `fusion.server_optimizer_options`, validated by its own `Options` model.
"""

import importlib
import pkgutil

from deqfl.fl.fusion.optimizer import fedadagrad, fedadam, fedavgm, fedyogi, sgd

# Any other module of this package is a rule too: adding a rule is adding one file.
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base",):
        importlib.import_module(f"{__name__}.{_module.name}")
from deqfl.fl.fusion.optimizer.base import OptimizerOptions, ServerOptimizer, Step

__all__ = [
    "OptimizerOptions",
    "ServerOptimizer",
    "Step",
    "fedadagrad",
    "fedadam",
    "fedavgm",
    "fedyogi",
    "sgd",
]
