"""Built-in server optimisers; importing this package registers them.

sgd (default, stateless; step `fusion.server_lr`), fedavgm, fedadam, fedyogi, fedadagrad
(stateful; Reddi et al., "Adaptive Federated Optimization", ICLR 2021). Each takes its
parameters from `fusion.server_optimizer_options`, validated by its own `Options` model.
"""

from deqfl.fl.fusion.optimizer import fedadagrad, fedadam, fedavgm, fedyogi, sgd
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
