"""Built-in aggregators; importing this package registers them.

Which combine with the weighting (quality, examples, ...):
- mean, fednova: yes, the weights are the averaging shares p_k.
- heterofl: yes; each entry is averaged over the updates that trained it (width slicing).
- median: yes, a weighted coordinate-wise median (with equal weights, the plain median).
- trimmed-mean: trimming is by count, not weight; the surviving values are averaged with
  their weights, renormalised per coordinate.
- multi-krum: selection ignores the weights (it is geometric); the selected updates are
  averaged with their weights, renormalised.
- krum: ignores the weights entirely (one update is selected).
"""

import importlib
import pkgutil

# Registration order is the order in which error messages list rules: plain, robust, others.
from deqfl.fl.fusion.aggregator import mean, median, trimmed_mean, krum, multi_krum, fednova, heterofl

# Any other module of this package is a rule too: adding a rule is adding one file.
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("ops",):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["fednova", "heterofl", "krum", "mean", "median", "multi_krum", "trimmed_mean"]
