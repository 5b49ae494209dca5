"""`deqfl bench cifar-models`: what one training sample of each CIFAR model costs on this CPU.

For each model, on random 3x32x32 inputs (10 classes), one torch thread by default:
- `params`, `bytes` (the federated payload);
- `macs_per_sample`: multiply-accumulates of one training step (forward, cross-entropy,
  backward) per sample, counted by torch's FlopCounterMode (convolutions and matrix
  products, MACs = FLOPs / 2), for a DEQ at each forward cap with tolerance 0 (every solve
  runs to the cap, the worst case) and the model's gradient mode (JFB by default);
  `cell_macs`: one cell evaluation on one sample (a DEQ's unit of work, as the ledger
  counts it; `deqfl.deq.accounting`);
- `seconds_per_sample[batch]`: wall time of one SGD training step over the batch size,
  median of `--steps` steps after one warm-up, likewise at tolerance 0 for a DEQ (upper
  bound: a converged solve stops earlier);
- `iterations_at_init`: a DEQ's mean per-sample forward iterations at its own tolerance
  (1e-3 relative) and cap 18 on the untrained model, and `relative_to_resnet20`: the
  seconds per sample over ResNet-20's at the same batch size.
The machine may be shared: `load_average` records how busy it was while timing, and
every time is then an overestimate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from deqfl.deq import solver_budget
from deqfl.models import build_model, find_deq, parameter_count, serialized_bytes

SHAPE = (3, 32, 32)
MODELS: dict[str, dict[str, Any]] = {
    "mdeq-tiny-8": {}, "mdeq-small-8": {}, "mdeq-large-8": {},
    "mdeq-tiny-16": {}, "mdeq-small-16": {}, "mdeq-large-16": {},
    "mdeq-small": {}, "deq-cifar": {},
    "resnet-8": {}, "resnet-14": {}, "resnet-20": {},
    "cnn-small/8-16": {"widths": (8, 16)}, "cnn-small/16-32": {"widths": (16, 32)},
    "cnn-small/32-64": {"widths": (32, 64)}, "cnn-large": {},
}


def register_bench(benches: argparse._SubParsersAction) -> None:
    parser = benches.add_parser(
        "cifar-models",
        help="seconds and multiply-accumulates per training sample of the CIFAR models",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="models (name or name/w1-w2 for a CNN width)")
    parser.add_argument("--caps", nargs="+", type=int, default=[18, 4], help="DEQ forward caps (default 18 and its quarter)")
    parser.add_argument("--batches", nargs="+", type=int, default=[32, 64], help="batch sizes timed")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per figure (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.set_defaults(func=main)


def _build(key: str) -> torch.nn.Module:
    name = key.split("/")[0]
    options = MODELS.get(key)
    if options is None and "/" in key:
        options = {"widths": tuple(int(w) for w in key.split("/")[1].split("-"))}
    torch.manual_seed(0)
    return build_model(name, SHAPE, 10, **(options or {}))


def _step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer, cap: int | None) -> float:
    """One SGD step (forward at `cap` with tolerance 0 for a DEQ); returns its mean forward iterations."""
    with solver_budget(model, forward_cap=cap, tol=0.0 if cap else None) as solves:
        loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return solves.mean_iterations


def training_macs(model: torch.nn.Module, cap: int | None, batch: int = 2) -> float:
    """Multiply-accumulates of one training step per sample (FlopCounterMode / 2 / batch)."""
    x, y = torch.randn(batch, *SHAPE), torch.arange(batch) % 10
    counter = FlopCounterMode(display=False)
    with counter:
        _step(model, x, y, torch.optim.SGD(model.parameters(), lr=0.0), cap)
    return counter.get_total_flops() / 2 / batch


def cell_macs(model: torch.nn.Module) -> float:
    """Multiply-accumulates of one cell evaluation on one sample."""
    deq = find_deq(model)
    with torch.no_grad():
        u = deq.inject(model.stem(torch.randn(1, *SHAPE)))
        counter = FlopCounterMode(display=False)
        with counter:
            deq.cell(deq.initial_state(u), u)
    return counter.get_total_flops() / 2


def seconds_per_sample(model: torch.nn.Module, batch: int, cap: int | None, steps: int) -> float:
    x = torch.randn(batch, *SHAPE, generator=torch.Generator().manual_seed(1))
    y = torch.arange(batch) % 10
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: every step the same work
    _step(model, x, y, opt, cap)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        _step(model, x, y, opt, cap)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / batch


def iterations_at_init(model: torch.nn.Module, cap: int = 18, batch: int = 64) -> float:
    x, y = torch.randn(batch, *SHAPE, generator=torch.Generator().manual_seed(2)), torch.arange(batch) % 10
    with solver_budget(model, forward_cap=cap) as solves:
        F.cross_entropy(model(x), y).backward()
    return solves.mean_iterations


def measure(key: str, caps: list[int], batches: list[int], steps: int) -> dict[str, Any]:
    model = _build(key).train()
    deq = find_deq(model)
    row: dict[str, Any] = {"params": parameter_count(model), "bytes": serialized_bytes(model)}
    settings = [(f"cap{c}", c) for c in caps] if deq is not None else [("explicit", None)]
    row["macs_per_sample"] = {label: training_macs(model, cap) for label, cap in settings}
    row["seconds_per_sample"] = {
        label: {str(b): seconds_per_sample(model, b, cap, steps) for b in batches} for label, cap in settings
    }
    if deq is not None:
        row["cell_macs"] = cell_macs(model)
        row["iterations_at_init"] = iterations_at_init(model)
    return row


def run(models: list[str], caps: list[int], batches: list[int], steps: int, threads: int, console: Console) -> dict[str, Any]:
    torch.set_num_threads(threads)
    results: dict[str, Any] = {"threads": threads, "caps": caps, "batches": batches, "steps": steps, "models": {}}
    loads = [os.getloadavg()[0]]
    for key in models:
        console.print(f"[dim]measuring {key}...[/dim]")
        results["models"][key] = measure(key, caps, batches, steps)
        loads.append(os.getloadavg()[0])
    reference = results["models"].get("resnet-20")
    if reference:
        base = reference["seconds_per_sample"]["explicit"]
        for row in results["models"].values():
            row["relative_to_resnet20"] = {
                label: {b: t / base[b] for b, t in by_batch.items()} for label, by_batch in row["seconds_per_sample"].items()
            }
    results["load_average"] = {"min": min(loads), "max": max(loads), "cores": os.cpu_count()}
    return results


def print_results(results: dict[str, Any], console: Console) -> None:
    batches = [str(b) for b in results["batches"]]
    table = Table(title=f"CIFAR models: one training step per sample, {results['threads']} thread(s)")
    for column in ["model", "setting", "params", "MMACs/sample", *[f"ms/sample b{b}" for b in batches],
                   "x ResNet-20", "cell MMACs", "iters@init"]:
        table.add_column(column, justify="left" if column in ("model", "setting") else "right")
    for key, row in results["models"].items():
        for label, by_batch in row["seconds_per_sample"].items():
            relative = row.get("relative_to_resnet20", {}).get(label, {})
            table.add_row(
                key, label, f"{row['params']:,}", f"{row['macs_per_sample'][label] / 1e6:.1f}",
                *[f"{by_batch[b] * 1e3:.2f}" for b in batches],
                f"{relative[batches[-1]]:.1f}" if relative else "",
                f"{row['cell_macs'] / 1e6:.2f}" if "cell_macs" in row else "",
                f"{row['iterations_at_init']:.1f}" if "iterations_at_init" in row else "",
            )
    console.print(table)
    load = results["load_average"]
    console.print(f"load average {load['min']:.1f}-{load['max']:.1f} on {load['cores']} cores (a shared machine inflates times)")


def main(args: argparse.Namespace) -> int:
    console = Console(width=150)
    results = run(args.models, args.caps, args.batches, args.steps, args.threads, console)
    print_results(results, console)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        console.print(f"wrote {args.out}")
    return 0
