"""Gradient modes for a DEQ: how dL/dtheta is obtained from the fixed point z* = f(z*).

The interface, its cost contract and the registry are in `deqfl.deq.backward.base`. Each
mode is one module of this package that registers itself with `@register_backward`; every
module here is imported with the package, so adding a mode is adding one file
(docs/EXTENDING.md). `make_backward(name, **options)` builds one from a config.
"""

import importlib
import pkgutil

from deqfl.deq.backward.base import (
    BackwardMode,
    backward_names,
    get_backward,
    make_backward,
    register_backward,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

from deqfl.deq.backward.ift import IFT  # noqa: E402
from deqfl.deq.backward.jfb import JFB  # noqa: E402
from deqfl.deq.backward.phantom import Phantom  # noqa: E402
from deqfl.deq.backward.unrolled import Unrolled  # noqa: E402

__all__ = [
    "IFT",
    "JFB",
    "BackwardMode",
    "Phantom",
    "Unrolled",
    "backward_names",
    "get_backward",
    "make_backward",
    "register_backward",
]
