"""DEQ cells f(z, u) and their registry (`deqfl.models.cells.base`): a DEQ model takes
any registered cell by name (`model.options.cell`). Each cell is one module of this
package that registers its family with `@register_cell(name)`; every module here is
imported with the package, so adding a cell is adding one file (docs/EXTENDING.md)."""

import importlib
import pkgutil

from deqfl.models.cells.base import (
    CellFamily,
    CellOptions,
    cell_names,
    make_family,
    register_cell,
    validate_cell_options,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

from deqfl.models.cells.multiscale import MultiscaleCell  # noqa: E402
from deqfl.models.cells.residual import InjectedResidualCell  # noqa: E402

__all__ = [
    "CellFamily",
    "CellOptions",
    "InjectedResidualCell",
    "MultiscaleCell",
    "cell_names",
    "make_family",
    "register_cell",
    "validate_cell_options",
]
