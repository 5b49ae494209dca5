"""`deqfl bench deq`: is the DEQ core correct, fast and frugal on this machine?

Figures (printed as a table, written as JSON with `--out`):
- `anderson_fevals_ratio`: mean per-sample f-evaluations Anderson (m=5, lam=1e-4) needs to
  reach relative residual 1e-4 on the deq-mnist cell at initialisation (128 MNIST test
  images), over those of plain fixed-point iteration (cap 500 each).
- `ift_grad_rel_error`: ||g_IFT - g_unrolled|| / ||g_unrolled|| on deq-mnist at
  initialisation in float64 (16 images), g_unrolled = backprop through 200 iterations.
- `backward_seconds` / `forward_seconds`: per batch of 64 on the trained deq-mnist, for
  ift, jfb and phantom (median of 10 steps; forward = solve + attach, backward = .backward()).
- `cell_gflops`: 2 * MACs of the cell's two convolutions / time of one cell evaluation at
  batch 128 (no grad, best of 50); `matmul_peak_gflops`: 2048^3 fp32 matmul, best of 10.
- `central_mnist`: one epoch (batch 64, Adam with a one-cycle lr peaking at 1e-2, seed 0) of
  deq-mnist and of each explicit baseline, on `--train-subset` training images (default
  all 60,000): `params`, `bytes`, `test_accuracy` (10k test set), `seconds` (training only).
- `stem_pool_ms`: the stem's 2x2 max-pool at the client batch (32 images, 16 channels,
  28x28), forward + backward and forward without a graph, best of 5 x 50: torch's
  `nn.MaxPool2d(2)` against deqfl's `MaxPool2x2` (same numbers bit for bit), and the ratio.
- `peak_memory_mb`: growth of the peak resident set of a fresh process during one
  training step at batch 128 (deq-mnist with each gradient mode, and the unrolled twin;
  unrolled = backprop through 16 weight-tied iterations).
- `anderson_fevals_ratio_trained` and `deq_eval`: the same ratio and the solver figures
  on the deq-mnist trained for one epoch (at initialisation the cell is so contractive
  that both solvers stop after a handful of evaluations).
Times use torch's thread count (`--threads`, default 2); `load_average` records how busy
the machine was, since other processes distort every timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch.nn import functional as F

from deqfl.deq import IFT, JFB, Phantom, SolverConfig, Unrolled, solve, solver_budget
from deqfl.models import (
    accuracy,
    accuracy_at_budgets,
    build_model,
    find_deq,
    parameter_count,
    serialized_bytes,
)
from deqfl.models.stems import MaxPool2x2

BASELINES = ("cnn-small", "cnn-large", "resnet-small", "resnet-large")
MODES = {"ift": IFT(), "jfb": JFB(), "phantom": Phantom()}


def register_bench(benches: argparse._SubParsersAction) -> None:
    parser = benches.add_parser(
        "deq",
        help="DEQ core: solver efficiency, gradient accuracy, speed, memory, central MNIST epoch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--data-dir", help="MNIST directory (default: the data layer's default source)")
    parser.add_argument("--train-subset", type=int, default=60000, help="training images for the central epoch")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.set_defaults(func=main)


def load_mnist(data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised float32 MNIST (x_train, y_train, x_test, y_test) from deqfl.data."""
    from deqfl.data import load_dataset

    data = load_dataset("mnist", data_dir=data_dir)
    return (
        data.normalise(data.x_train),
        torch.from_numpy(data.y_train),
        data.normalise(data.x_test),
        torch.from_numpy(data.y_test),
    )


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def cell_gflops(batch: int = 128) -> float:
    torch.manual_seed(0)
    model = build_model("deq-mnist")
    deq = find_deq(model)
    with torch.no_grad():
        u = deq.inject(model.stem(torch.randn(batch, 1, 28, 28)))
        z = torch.rand_like(u)
        deq.cell(z, u)
        best = min(_timed(lambda: deq.cell(z, u)) for _ in range(50))
    c, h, w = u.shape[1:]
    flops = 2 * (2 * 9 * c * c * h * w * batch)
    return flops / best / 1e9


def anderson_vs_fixed_point(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Mean per-sample f-evaluations to relative residual 1e-4 (cap 500), both solvers."""
    deq = find_deq(model)
    with torch.no_grad():
        u = deq.inject(model.stem(x))
    f = lambda z: deq.cell(z, u)  # noqa: E731
    iters = {}
    for method in ("anderson", "fixed_point"):
        config = SolverConfig(method=method, max_iter=500, tol=1e-4, m=5, lam=1e-4)
        stats = solve(f, deq.initial_state(u), config).stats
        iters[method] = stats.mean_iterations
        iters[f"{method}_converged"] = stats.converged_fraction
    iters["ratio"] = iters["anderson"] / iters["fixed_point"]
    return iters


def ift_grad_rel_error(x: torch.Tensor, y: torch.Tensor) -> float:
    grads = []
    for mode, solver in (
        (IFT(max_iter=200, tol=1e-12), SolverConfig(max_iter=200, tol=1e-12)),
        (Unrolled(steps=200), SolverConfig(max_iter=200)),
    ):
        torch.manual_seed(0)
        model = build_model("deq-mnist", solver=solver, backward=mode).double()
        F.cross_entropy(model(x.double()), y).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    return float((grads[0] - grads[1]).norm() / grads[1].norm())


def train_epoch(name: str, x: torch.Tensor, y: torch.Tensor, batch: int = 64, lr: float = 1e-2) -> tuple[torch.nn.Module, float]:
    torch.manual_seed(0)
    model = build_model(name, tuple(x.shape[1:]))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).split(batch)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=len(order), pct_start=0.15)
    start = time.perf_counter()
    for idx in order:
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model, time.perf_counter() - start


def backward_timings(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, dict[str, float]]:
    model.train()
    out = {}
    for name, mode in MODES.items():
        fwd, bwd, iters = [], [], []
        for i in range(12):
            model.zero_grad()
            t0 = time.perf_counter()
            with solver_budget(model, backward=mode) as solves:
                loss = F.cross_entropy(model(x), y)
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            if i >= 2:  # warm-up
                fwd.append(t1 - t0)
                bwd.append(t2 - t1)
                iters.append(solves.mean_iterations)
        out[name] = {"forward": statistics.median(fwd), "backward": statistics.median(bwd), "iterations": statistics.mean(iters)}
    model.zero_grad()
    return out


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _memory_probe(name: str, mode: str | None, threads: int) -> None:
    """Run in a fresh process: print the peak-RSS growth (MB) of one training step.
    The peak (VmHWM) is reset just before the step (Linux /proc/self/clear_refs), and large
    blocks are mmap-ed (MALLOC_MMAP_THRESHOLD_, set by the caller) so freed memory returns
    to the system and the growth counts what the step itself holds at its peak."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    options = {"backward": mode} if mode else {}
    model = build_model(name, **options)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    with torch.no_grad():
        model.eval()(x[:2])
    model.train()
    Path("/proc/self/clear_refs").write_text("5")
    before = _rss_mb("VmRSS")
    F.cross_entropy(model(x), y).backward()
    print(_rss_mb("VmHWM") - before)


def peak_memory_mb(threads: int) -> dict[str, float]:
    probes = {mode: ("deq-mnist", mode) for mode in ("ift", "jfb", "phantom", "unrolled")}
    probes["unrolled-twin"] = ("unrolled-mnist", None)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = {}
    for key, (name, mode) in probes.items():
        code = f"from deqfl.bench.deq_bench import _memory_probe; _memory_probe({name!r}, {mode!r}, {threads})"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        out[key] = round(float(result.stdout.strip().splitlines()[-1]), 1)
    return out


def stem_pool_ms(batch: int = 32, channels: int = 16, size: int = 28) -> dict[str, float]:
    x = torch.randn(batch, channels, size, size, requires_grad=True)

    def best_ms(fn) -> float:
        fn()
        return min(_timed(lambda: [fn() for _ in range(50)]) for _ in range(5)) / 50 * 1e3

    out = {}
    for label, pool in (("torch", torch.nn.MaxPool2d(2)), ("deqfl", MaxPool2x2())):
        out[f"{label}_forward_backward"] = best_ms(lambda: pool(x).sum().backward())
        with torch.no_grad():
            out[f"{label}_forward_no_grad"] = best_ms(lambda: pool(x))
    out["ratio_forward_backward"] = out["deqfl_forward_backward"] / out["torch_forward_backward"]
    out["ratio_forward_no_grad"] = out["deqfl_forward_no_grad"] / out["torch_forward_no_grad"]
    return out


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(data_dir: str | None, train_subset: int, threads: int, console: Console) -> dict[str, Any]:
    torch.set_num_threads(threads)
    x_train, y_train, x_test, y_test = load_mnist(data_dir)
    x_train, y_train = x_train[:train_subset], y_train[:train_subset]
    results: dict[str, Any] = {"threads": threads, "train_images": len(x_train)}

    console.print("[bold]solver and gradient checks[/bold]")
    torch.manual_seed(0)
    solver = anderson_vs_fixed_point(build_model("deq-mnist"), x_test[:128])
    results["anderson_fevals_ratio"] = solver["ratio"]
    results["anderson_fevals"] = solver["anderson"]
    results["fixed_point_fevals"] = solver["fixed_point"]
    results["ift_grad_rel_error"] = ift_grad_rel_error(x_test[:16], y_test[:16])
    results["matmul_peak_gflops"] = matmul_peak_gflops()
    results["cell_gflops"] = cell_gflops()
    results["cell_fraction_of_peak"] = results["cell_gflops"] / results["matmul_peak_gflops"]
    results["stem_pool_ms"] = stem_pool_ms()

    central: dict[str, dict[str, Any]] = {}
    deq_model = None
    for name in ("deq-mnist", *BASELINES):
        console.print(f"[bold]central MNIST epoch: {name}[/bold]")
        model, seconds = train_epoch(name, x_train, y_train)
        central[name] = {
            "params": parameter_count(model),
            "bytes": serialized_bytes(model),
            "test_accuracy": accuracy(model, x_test, y_test, 500),
            "seconds": seconds,
        }
        row = central[name]
        console.print(f"  {row['params']:,} params, test accuracy {row['test_accuracy']:.4f}, {seconds:.1f} s")
        if name == "deq-mnist":
            deq_model = model
    results["central_mnist"] = central

    trained = anderson_vs_fixed_point(deq_model, x_test[:128])
    results["anderson_fevals_ratio_trained"] = trained["ratio"]
    results["anderson_fevals_trained"] = trained["anderson"]
    results["fixed_point_fevals_trained"] = trained["fixed_point"]
    deq = find_deq(deq_model)
    deq_model.eval()
    with torch.no_grad(), solver_budget(deq_model) as solves:
        deq_model(x_test[:1000])
    (call,) = solves.calls
    stats = call.stats
    results["deq_eval"] = {
        "mean_iterations": stats.mean_iterations,
        "mean_rel_residual": stats.mean_rel_residual,
        "converged_fraction": stats.converged_fraction,
        "contraction": float(deq.contraction(deq_model.stem(x_test[:256])).mean()),
        "accuracy_at_budgets": accuracy_at_budgets(deq_model, x_test, y_test, batch_size=500),
    }
    timings = backward_timings(deq_model, x_train[:64], y_train[:64])
    results["backward_seconds"] = {k: v["backward"] for k, v in timings.items()}
    results["forward_seconds"] = {k: v["forward"] for k, v in timings.items()}
    console.print("[bold]peak memory of one training step (fresh processes)[/bold]")
    results["peak_memory_mb"] = peak_memory_mb(threads)

    deq_acc = central["deq-mnist"]["test_accuracy"]
    results["targets"] = {
        "anderson_half_of_fixed_point": results["anderson_fevals_ratio"] <= 0.5,
        "cell_40pct_of_matmul_peak": results["cell_fraction_of_peak"] >= 0.4,
        "deq_98pct_after_one_epoch": deq_acc >= 0.98,
        "deq_fewer_params_than_every_baseline_as_accurate": all(
            central["deq-mnist"]["params"] < v["params"] for k, v in central.items() if k != "deq-mnist" and v["test_accuracy"] >= deq_acc
        ),
    }
    results["load_average"] = os.getloadavg()
    return results


def print_results(results: dict[str, Any], console: Console) -> None:
    table = Table(title="deqfl bench deq")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("anderson / fixed-point f-evals to rel 1e-4, init", f"{results['anderson_fevals_ratio']:.3f} ({results['anderson_fevals']:.1f} / {results['fixed_point_fevals']:.1f})")
    table.add_row("same, trained deq-mnist", f"{results['anderson_fevals_ratio_trained']:.3f} ({results['anderson_fevals_trained']:.1f} / {results['fixed_point_fevals_trained']:.1f})")
    table.add_row("IFT vs 200-step unrolled grad, rel error", f"{results['ift_grad_rel_error']:.2e}")
    table.add_row("cell GFLOP/s (batch 128) / matmul peak", f"{results['cell_gflops']:.1f} / {results['matmul_peak_gflops']:.1f} ({results['cell_fraction_of_peak']:.0%})")
    pool = results["stem_pool_ms"]
    table.add_row("stem max-pool ms, fwd+bwd / no-grad fwd: torch", f"{pool['torch_forward_backward']:.2f} / {pool['torch_forward_no_grad']:.2f}")
    table.add_row("same, deqfl MaxPool2x2 (ratio to torch)", f"{pool['deqfl_forward_backward']:.2f} / {pool['deqfl_forward_no_grad']:.2f} ({pool['ratio_forward_backward']:.2f}x / {pool['ratio_forward_no_grad']:.2f}x)")
    for mode, seconds in results["backward_seconds"].items():
        table.add_row(f"{mode}: forward / backward s (batch 64)", f"{results['forward_seconds'][mode]:.3f} / {seconds:.3f}")
    for key, mb in results["peak_memory_mb"].items():
        table.add_row(f"peak memory MB, training step ({key})", f"{mb:.1f}")
    ev = results["deq_eval"]
    table.add_row("deq-mnist eval: iterations, rel residual, ||J||", f"{ev['mean_iterations']:.2f}, {ev['mean_rel_residual']:.1e}, {ev['contraction']:.3f}")
    table.add_row("deq-mnist accuracy at budgets", ", ".join(f"{b}:{a:.4f}" for b, a in ev["accuracy_at_budgets"].items()))
    console.print(table)
    central = Table(title=f"one epoch of central MNIST ({results['train_images']} images)")
    for column in ("model", "params", "bytes", "test accuracy", "seconds"):
        central.add_column(column, justify="left" if column == "model" else "right")
    for name, row in results["central_mnist"].items():
        central.add_row(name, f"{row['params']:,}", f"{row['bytes']:,}", f"{row['test_accuracy']:.4f}", f"{row['seconds']:.1f}")
    console.print(central)
    console.print("targets: " + ", ".join(f"{k}={'met' if v else 'NOT met'}" for k, v in results["targets"].items()))


def main(args: argparse.Namespace) -> int:
    console = Console()
    results = run(args.data_dir, args.train_subset, args.threads, console)
    print_results(results, console)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=float))
        console.print(f"wrote {args.out}")
    return 0
