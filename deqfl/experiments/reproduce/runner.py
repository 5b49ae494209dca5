"""Run the suite run by run, skipping runs already in the store (resumable across sittings).

A run interrupted mid-way resumes from its own checkpoint (its run directory under
`OUT/runs/<run_id>`); a finished run is stored as one JSON file and never run again.

Several workers may share one OUT and store (e.g. one per core): each run is claimed with
an exclusive `flock` on `OUT/runs/<run_id>.lock` before it starts, and the kernel drops
the claim when its process ends, however it ends, so a crashed worker's run is picked
up again by the next worker or sitting.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from deqfl.experiments.config import load_config
from deqfl.experiments.reproduce.store import load_results, result_path, save_result
from deqfl.experiments.reproduce.suite import RunSpec
from deqfl.experiments.results import read_jsonl
from deqfl.experiments.runner import run_experiment


def run_suite(
    specs: list[RunSpec],
    store: Path,
    out: Path,
    data_dirs: dict[str, str],
    log: Callable[[str], None] = functools.partial(print, flush=True),
) -> list[dict]:
    todo = [s for s in specs if not result_path(store, s).exists()]
    log(f"{len(specs)} runs in the suite, {len(specs) - len(todo)} already stored in {store}, {len(todo)} to run")
    for i, spec in enumerate(todo, 1):
        with _claim(out / "runs" / f"{spec.run_id}.lock") as claimed:
            if not claimed or result_path(store, spec).exists():
                continue
            _run_one(spec, store, out, data_dirs, log, f"[{i}/{len(todo)}]")
    wanted = {s.run_id for s in specs}
    return [r for r in load_results(store) if r["run_id"] in wanted]


@contextlib.contextmanager
def _claim(lock: Path) -> Iterator[bool]:
    """Hold an exclusive, non-blocking flock on `lock`; yields False if another process has it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_one(spec: RunSpec, store: Path, out: Path, data_dirs: dict[str, str], log: Callable[[str], None],
             position: str) -> None:
    """Run one spec (resuming its own checkpoint if it was interrupted) and store its result."""
    overrides = list(spec.overrides)
    if spec.dataset in data_dirs:
        overrides.append(f"data.data_dir={json.dumps(data_dirs[spec.dataset])}")
    config = load_config(None, overrides + [f"experiment.name={spec.run_id}"])
    run_dir = out / "runs" / spec.run_id
    resume = (run_dir / "metrics.jsonl").exists()
    started = time.perf_counter()
    summary = run_experiment(config, run_dir, resume=resume)
    save_result(store, spec, summary, read_jsonl(run_dir / "metrics.jsonl"))
    log(
        f"{position} {spec.run_id}: final accuracy {100 * summary['final_accuracy']:.2f}% "
        f"in {time.perf_counter() - started:.0f} s"
    )
