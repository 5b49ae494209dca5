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
  bound: a converged solve stops earlier); `cpu_seconds_per_sample[batch]`: the process's
  CPU time instead (with one thread, about the wall time on an idle machine);
- `iterations_at_init`: a DEQ's mean per-sample forward iterations at its own tolerance
  (1e-3 relative) and cap 18 on the untrained model, and `seconds_relative_to_resnet20` /
  `cpu_seconds_relative_to_resnet20`: the (CPU) seconds per sample over ResNet-20's at
  the same batch size.
With `--cifar-dir`, `trained[model]`: each of `--train-models` trained centrally on CIFAR-10
for `--train-steps` Adam steps (lr 1e-3, batch 64, seed 0, no augmentation; a DEQ at its
own solver: cap 16, tolerance 1e-3) and then evaluated on 1,000 test images (a seeded random subset):
`mean_train_iterations` over the last half of the steps, `eval_iterations` and
`eval_capped_fraction` at cap 18 and at the weak cap (the last of `--caps`), with
`test_accuracy` at each, and `train_seconds`.
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

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch.nn import functional as F

from deqfl.deq import solver_budget
from deqfl.models import build_model, find_deq, parameter_count, serialized_bytes
from deqfl.models.macs import cell_macs, training_macs, training_step

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
    parser.add_argument("--cifar-dir", help="CIFAR-10 source (directory or .tar.gz): also train centrally")
    parser.add_argument("--train-models", nargs="+", default=["mdeq-tiny-8", "mdeq-small-8", "mdeq-small-16", "resnet-20"],
                        help="models trained with --cifar-dir")
    parser.add_argument("--train-steps", type=int, default=150, help="Adam steps of 64 images per trained model")
    parser.set_defaults(func=main)


def _build(key: str) -> torch.nn.Module:
    name = key.split("/")[0]
    options = MODELS.get(key)
    if options is None and "/" in key:
        options = {"widths": tuple(int(w) for w in key.split("/")[1].split("-"))}
    torch.manual_seed(0)
    return build_model(name, SHAPE, 10, **(options or {}))


def seconds_per_sample(model: torch.nn.Module, batch: int, cap: int | None, steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds of one training step per sample, medians of `steps` steps."""
    x = torch.randn(batch, *SHAPE, generator=torch.Generator().manual_seed(1))
    y = torch.arange(batch) % 10
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: every step the same work
    training_step(model, x, y, opt, cap)
    wall, cpu = [], []
    for _ in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        training_step(model, x, y, opt, cap)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall) / batch, statistics.median(cpu) / batch


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
    row["macs_per_sample"] = {label: training_macs(model, SHAPE, cap) for label, cap in settings}
    timings = {label: {str(b): seconds_per_sample(model, b, cap, steps) for b in batches} for label, cap in settings}
    row["seconds_per_sample"] = {label: {b: t[0] for b, t in by_batch.items()} for label, by_batch in timings.items()}
    row["cpu_seconds_per_sample"] = {label: {b: t[1] for b, t in by_batch.items()} for label, by_batch in timings.items()}
    if deq is not None:
        row["cell_macs"] = cell_macs(model, SHAPE)
        row["iterations_at_init"] = iterations_at_init(model)
    return row


def train_central(key: str, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                  steps: int, caps: list[int], batch: int = 64) -> dict[str, Any]:
    """`steps` Adam steps on (x, y) at the model's own solver, then the test figures at each cap."""
    model = _build(key).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    iterations, start = [], time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(len(x), (batch,), generator=generator)
        iterations.append(training_step(model, x[idx], y[idx], opt, None))
    row: dict[str, Any] = {"train_seconds": time.perf_counter() - start}
    if find_deq(model) is not None:
        row["mean_train_iterations"] = statistics.mean(iterations[len(iterations) // 2:])
    model.eval()
    for cap in ([caps[0], caps[-1]] if find_deq(model) is not None else [None]):
        with torch.no_grad(), solver_budget(model, forward_cap=cap) as solves:
            logits = torch.cat([model(x_test[i:i + 250]) for i in range(0, len(x_test), 250)])
        label = f"cap{cap}" if cap else "explicit"
        row[label] = {"test_accuracy": float((logits.argmax(1) == y_test).double().mean())}
        if cap:
            row[label]["eval_iterations"] = solves.mean_iterations
            row[label]["eval_capped_fraction"] = 1 - statistics.mean(float(c.stats.converged_fraction) for c in solves.calls)
    return row


def _cifar(data_dir: str) -> tuple[torch.Tensor, ...]:
    from deqfl.data import load_dataset  # noqa: PLC0415 - only with --cifar-dir

    data = load_dataset("cifar10", data_dir=data_dir)
    mean, std = torch.tensor(data.mean).view(1, 3, 1, 1), torch.tensor(data.std).view(1, 3, 1, 1)

    def norm(images):
        return (torch.from_numpy(images).float() / 255 - mean) / std

    test = np.random.default_rng(0).permutation(len(data.x_test))[:1000]  # the test set may be sorted by class
    return norm(data.x_train), torch.from_numpy(data.y_train), norm(data.x_test[test]), torch.from_numpy(data.y_test[test])


def run(models: list[str], caps: list[int], batches: list[int], steps: int, threads: int, console: Console,
        cifar_dir: str | None = None, train_models: list[str] = (), train_steps: int = 0) -> dict[str, Any]:
    torch.set_num_threads(threads)
    results: dict[str, Any] = {"threads": threads, "caps": caps, "batches": batches, "steps": steps, "models": {}}
    loads = [os.getloadavg()[0]]
    for key in models:
        console.print(f"[dim]measuring {key}...[/dim]")
        results["models"][key] = measure(key, caps, batches, steps)
        loads.append(os.getloadavg()[0])
    reference = results["models"].get("resnet-20")
    if reference:
        for kind in ("seconds_per_sample", "cpu_seconds_per_sample"):
            base = reference[kind]["explicit"]
            for row in results["models"].values():
                row[f"{kind.removesuffix('_per_sample')}_relative_to_resnet20"] = {
                    label: {b: t / base[b] for b, t in by_batch.items()} for label, by_batch in row[kind].items()
                }
    if cifar_dir and train_steps:
        tensors = _cifar(cifar_dir)
        results["train_steps"], results["trained"] = train_steps, {}
        for key in train_models:
            console.print(f"[dim]training {key} on CIFAR-10...[/dim]")
            results["trained"][key] = train_central(key, *tensors, train_steps, caps)
            loads.append(os.getloadavg()[0])
    results["load_average"] = {"min": min(loads), "max": max(loads), "cores": os.cpu_count()}
    return results


def print_results(results: dict[str, Any], console: Console) -> None:
    batches = [str(b) for b in results["batches"]]
    table = Table(title=f"CIFAR models: one training step per sample, {results['threads']} thread(s)")
    for column in ["model", "setting", "params", "MMACs/sample", *[f"ms/sample b{b}" for b in batches],
                   *[f"CPU ms b{b}" for b in batches], "x ResNet-20 (CPU)", "cell MMACs", "iters@init"]:
        table.add_column(column, justify="left" if column in ("model", "setting") else "right")
    for key, row in results["models"].items():
        for label, by_batch in row["seconds_per_sample"].items():
            relative = row.get("cpu_seconds_relative_to_resnet20", {}).get(label, {})
            table.add_row(
                key, label, f"{row['params']:,}", f"{row['macs_per_sample'][label] / 1e6:.1f}",
                *[f"{by_batch[b] * 1e3:.2f}" for b in batches],
                *[f"{row['cpu_seconds_per_sample'][label][b] * 1e3:.2f}" for b in batches],
                f"{relative[batches[-1]]:.1f}" if relative else "",
                f"{row['cell_macs'] / 1e6:.2f}" if "cell_macs" in row else "",
                f"{row['iterations_at_init']:.1f}" if "iterations_at_init" in row else "",
            )
    console.print(table)
    if results.get("trained"):
        caps = results["caps"]
        trained = Table(title=f"central CIFAR-10, {results['train_steps']} Adam steps of 64 (1,000 test images)")
        for column in ["model", "train s", "train iters", *[f"acc / iters / capped @{c}" for c in (caps[0], caps[-1])]]:
            trained.add_column(column, justify="left" if column == "model" else "right")
        for key, row in results["trained"].items():
            cells = [f"{row[f'cap{c}']['test_accuracy']:.3f} / {row[f'cap{c}']['eval_iterations']:.1f} / "
                     f"{row[f'cap{c}']['eval_capped_fraction']:.2f}" if f"cap{c}" in row else
                     f"{row['explicit']['test_accuracy']:.3f}" for c in (caps[0], caps[-1])]
            trained.add_row(key, f"{row['train_seconds']:.0f}", f"{row.get('mean_train_iterations', 0):.1f}", *cells)
        console.print(trained)
    load = results["load_average"]
    console.print(f"load average {load['min']:.1f}-{load['max']:.1f} on {load['cores']} cores (a shared machine inflates times)")


def main(args: argparse.Namespace) -> int:
    console = Console(width=150)
    results = run(args.models, args.caps, args.batches, args.steps, args.threads, console,
                  args.cifar_dir, args.train_models, args.train_steps)
    print_results(results, console)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        console.print(f"wrote {args.out}")
    return 0
