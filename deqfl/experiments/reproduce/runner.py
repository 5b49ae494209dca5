"""Run the suite run by run, skipping runs already in the store (resumable across sittings).

A run interrupted mid-way resumes from its own checkpoint (its run directory under
`OUT/runs/<run_id>`); a finished run is stored as one JSON file and never run again. A run
whose configuration (data set, seed, overrides) another table's stored run already ran is
not run again either: that result is stored under its labels (`store.save_twin`).

Several processes may share one OUT and store (`parallel` > 1 starts them itself; separate
`deqfl reproduce` commands work too): each run is claimed with an exclusive `flock` on
`OUT/runs/<run_id>.lock` before it starts, and the kernel drops the claim when its process
ends, however it ends, so a crashed process's run is picked up again by the next one or
sitting.

Cores: a run trains its clients on `experiment.workers` worker processes (unset: every
usable core). With `parallel` = K runs at once, each run gets
`experiment.workers = max(1, usable cores // K)`, so the K runs share the cores instead of
each taking all of them. The worker count changes no result, and is not part of a run id.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from deqfl.experiments.config import load_config, usable_cores
from deqfl.experiments.reproduce.store import find_twin, load_results, result_path, save_result, save_twin
from deqfl.experiments.reproduce.suite import RunSpec
from deqfl.experiments.results import read_jsonl
from deqfl.experiments.runner import run_experiment


def run_suite(
    specs: list[RunSpec],
    store: Path,
    out: Path,
    data_dirs: dict[str, str],
    log: Callable[[str], None] | None = None,
    parallel: int = 1,
) -> list[dict]:
    """Run every spec not yet in `store`, `parallel` at a time (each in its own process
    when `parallel` > 1, which then prints its lines itself); returns the stored results
    of `specs`. `log` receives the progress lines (default: printed)."""
    log = log or say
    todo = [s for s in specs if not result_path(store, s).exists()]
    log(f"{len(specs)} runs in the suite, {len(specs) - len(todo)} already stored in {store}, {len(todo)} to run")
    todo = _store_twins(todo, store, log)
    workers = [] if parallel == 1 else [f"experiment.workers={max(1, usable_cores() // parallel)}"]
    run_log = log if parallel == 1 else say  # a process of its own prints its own lines
    args = [(spec, store, out, data_dirs, run_log, f"[{i}/{len(todo)}]", workers) for i, spec in enumerate(todo, 1)]
    if parallel == 1:
        for item in args:
            _claim_and_run(*item)
    else:
        with ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn")) as runs:
            for done in [runs.submit(_claim_and_run, *item) for item in args]:
                done.result()
    wanted = {s.run_id for s in specs}
    return [r for r in load_results(store) if r["run_id"] in wanted]


def _store_twins(todo: list[RunSpec], store: Path, log: Callable[[str], None]) -> list[RunSpec]:
    """Store the result of each spec in `todo` whose configuration a stored run already ran
    (`store.find_twin`); returns the specs left to run."""
    stored = load_results(store) if todo else []
    left = []
    for spec in todo:
        twin = find_twin(stored, spec)
        if twin is None:
            left.append(spec)
        else:
            save_twin(store, spec, twin)
            log(f"{spec.run_id}: the same configuration as the stored {twin['run_id']}; its result stored, not rerun")
    return left


def say(message: str) -> None:
    """Print a progress line at once (runs may take hours)."""
    print(message, flush=True)


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


def _claim_and_run(spec: RunSpec, store: Path, out: Path, data_dirs: dict[str, str],
                   log: Callable[[str], None], position: str, extra: list[str]) -> None:
    """Run `spec` unless another process holds its claim or it is stored already."""
    with _claim(out / "runs" / f"{spec.run_id}.lock") as claimed:
        if claimed and not result_path(store, spec).exists():
            _run_one(spec, store, out, data_dirs, log, position, extra)


def _run_one(spec: RunSpec, store: Path, out: Path, data_dirs: dict[str, str], log: Callable[[str], None],
             position: str, extra: list[str]) -> None:
    """Run one spec (resuming its own checkpoint if it was interrupted) and store its result;
    `extra` overrides change how it runs, not what (they are not part of its id)."""
    overrides = list(spec.overrides) + extra
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
