"""Imports point downward only (issue 15, item 8):

    deq < models < data < fl < engines < experiments, cli, bench (entry points)

A module may import its own layer and the layers below it. Modules at the package root
(`deqfl/errors.py`, ...) and `deqfl.presets` (data files) are the base: every layer may
import them, and they import no layer. The Flower app objects, which read experiment
configs, are entry points and live in `deqfl.experiments.flower_app`, so no module below
`experiments` needs an exception: there is no allow-list.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "deqfl"
LAYERS = {
    "presets": 0, "deq": 1, "models": 2, "data": 3, "fl": 4, "engines": 5,
    "experiments": 6, "cli": 6, "bench": 6,
}
CHECKED = [name for name, rank in LAYERS.items() if rank < LAYERS["experiments"]]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(text: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `text`, the source of `module`
    (function-local and relative imports included)."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            if name == "deqfl":  # `from deqfl import fl` names a sub-package
                found += [(node.lineno, f"deqfl.{alias.name}") for alias in node.names]
    return sorted(found)


def _file_imports(path: Path) -> list[tuple[int, str]]:
    return _imported(path.read_text(), _module_name(path), path.name == "__init__.py")


def _layer(module: str) -> int | None:
    """The layer of a deqfl module; 0 for a root module; None if unknown."""
    parts = module.split(".")
    if len(parts) < 2:
        return 0  # the package itself
    if parts[1] in LAYERS:
        return LAYERS[parts[1]]
    return 0 if (PACKAGE / f"{parts[1]}.py").exists() else None


def _checked_files() -> list[Path]:
    files = sorted(p for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    for name in CHECKED:
        files += sorted((PACKAGE / name).rglob("*.py"))
    return files


def test_every_top_level_package_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages - set(LAYERS) == set(), "give every deqfl sub-package a layer in LAYERS (tests/test_layering.py)"


def _violations(module: str, imports: list[tuple[int, str]]) -> list[str]:
    own, found = _layer(module), []
    for line, name in imports:
        if name != "deqfl" and not name.startswith("deqfl."):
            continue
        target = _layer(name)
        if target is None:
            found.append(f"{module}:{line} imports {name}, which has no layer in LAYERS")
        elif target > own:
            found.append(f"{module}:{line} imports {name} (layer {target} above {own})")
    return found


def test_lower_layers_never_import_upward():
    violations = [v for path in _checked_files() for v in _violations(_module_name(path), _file_imports(path))]
    assert violations == []


def test_the_checker_finds_upward_imports():
    """The check can fail: a function-local, a relative and a package-level upward import
    in an engine module are each reported; a downward one is not."""
    text = (
        "from deqfl.fl.client import ClientData\n"
        "def f():\n    from deqfl.experiments.runner import run_experiment\n"
        "from ...experiments import config\n"
        "from deqfl import cli\n"
    )
    imports = _imported(text, "deqfl.engines.flower.client_app")
    assert [name for _, name in imports] == [
        "deqfl.fl.client", "deqfl.experiments.runner", "deqfl.experiments", "deqfl", "deqfl.cli",
    ]
    assert [v.split(" imports ")[1].split(" ")[0] for v in _violations("deqfl.engines.flower.client_app", imports)] == [
        "deqfl.experiments.runner", "deqfl.experiments", "deqfl.cli",
    ]


def test_engines_load_without_experiments():
    """At run time too: importing every engine module (the Flower ones when flwr is
    installed) loads no `deqfl.experiments` module."""
    pytest.importorskip("flwr")
    modules = [_module_name(p) for p in sorted((PACKAGE / "engines").rglob("*.py"))]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('deqfl.experiments', 'deqfl.cli', 'deqfl.bench'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(PACKAGE.parent)},
    )
    assert out.stdout.strip() == "[]"
