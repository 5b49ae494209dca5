"""`deqfl data summary`: a table of per-client label counts, statistics, and a PNG heat map."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from deqfl.cli import cmd_data
from deqfl.cli.main import main


def data_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deqfl")
    cmd_data.register(parser.add_subparsers(dest="command"))
    return parser


def run(argv: list[str]) -> int:
    args = data_parser().parse_args(argv)
    return args.func(args)


def test_summary_prints_table_and_writes_png(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    png = tmp_path / "out" / "heat.png"
    assert run(["data", "summary", "--dataset", "digits", "--partition", "dirichlet", "--alpha", "0.3",
                "--clients", "12", "--seed", "1", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "Label counts per client" in out and "dirichlet, alpha=0.3, seed=1, 12 clients" in out
    assert "samples assigned" in out and "1437 of 1437" in out and "label entropy" in out
    rows = [line for line in out.splitlines() if line.strip().split(" ")[0].isdigit()]
    assert len(rows) >= 12
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 100


def test_pathological_k_reaches_the_partition(capsys: pytest.CaptureFixture) -> None:
    assert run(["data", "summary", "--dataset", "synthetic", "--partition", "pathological",
                "--classes-per-client", "3", "--clients", "10"]) == 0
    assert "3 / 3.00 / 3" in capsys.readouterr().out  # classes per client min / mean / max


def test_many_classes_use_a_top_classes_column() -> None:
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(cmd_data.client_table(np.eye(3, 30, dtype=np.int64) * 5, tuple(f"c{k}" for k in range(30))))
    text = console.export_text()
    assert "top classes" in text and "c0:5" in text and "c2:5" in text


def test_errors_exit_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["data", "summary", "--dataset", "fashion-mnist", "--cache-dir", str(tmp_path)])
    assert code == 2
    assert "deqfl: error: Fashion-MNIST has no built-in source" in capsys.readouterr().err
    assert main(["data", "summary", "--dataset", "digits", "--clients", "5000"]) == 2
    assert "more clients than samples" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["data", "--help"], ["data", "summary", "--help"]])
def test_help(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        data_parser().parse_args(argv)
    assert info.value.code == 0 and "usage:" in capsys.readouterr().out
