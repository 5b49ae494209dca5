"""Built-in weightings; importing this package registers them."""

import importlib
import pkgutil

from deqfl.fl.fusion.weighting import examples, quality, uniform

# Any other module of this package is a rule too: adding a rule is adding one file.
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ():
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["examples", "quality", "uniform"]
