"""The embedded engine's worker pool: bitwise invariance to the worker count, declared
client failures as rejections, programming errors stopping the run, no leftover processes."""

import json
import multiprocessing

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from deqfl.data import load_dataset
from deqfl.data.folder import open_arrays
from deqfl.engines.embedded import EmbeddedEngine
from deqfl.engines.spec import ModelSpec
from deqfl.errors import ClientFailure, UnexpectedClientError
from deqfl.experiments.config import load_config
from deqfl.experiments.results import read_jsonl
from deqfl.experiments.runner import run_experiment
from deqfl.fl.client import ClientData, ClientTask, TrainOptions
from deqfl.fl.faults import ClientCrash
from deqfl.fl.profiles import TierConfig
from deqfl.fl.server import ClientJob
from deqfl.fl.transport import PayloadError, decode_state, encode_state
from deqfl.models import federated_state

SMALL = [
    "data.dataset=digits", "data.num_clients=6", "data.alpha=1.0", "data.eval_subset=0",
    "experiment.rounds=2", "sampling.fraction=1.0", "train.batch_size=16",
    "evaluation.anytime_every=1", "evaluation.anytime_budgets=[1, 4]", "train.residual_samples=32",
]
MEASURED = {"wall_seconds", "train_seconds", "eval_seconds", "compute_seconds"}


def _strip_measured(value):
    if isinstance(value, dict):
        return {k: _strip_measured(v) for k, v in value.items() if k not in MEASURED}
    if isinstance(value, list):
        return [_strip_measured(v) for v in value]
    return value


def _final_state(out):
    return load_file(str(out / "model.safetensors"))


@pytest.fixture(autouse=True, scope="module")
def no_worker_outlives_the_tests():
    yield
    assert multiprocessing.active_children() == []


def test_final_model_is_bitwise_equal_for_one_and_two_workers(tmp_path):
    cache = f"data.cache_dir={json.dumps(str(tmp_path / 'cache'))}"
    runs = {}
    for workers in (1, 2):
        config = load_config(None, SMALL + [cache, f"experiment.workers={workers}", "faults.crash_clients=[4]"])
        out = tmp_path / f"w{workers}"
        summary = run_experiment(config, out)
        runs[workers] = (out, summary)
    (out1, summary1), (out2, summary2) = runs[1], runs[2]
    state1, state2 = _final_state(out1), _final_state(out2)
    assert state1.keys() == state2.keys()
    assert all(torch.equal(state1[k], state2[k]) for k in state1)
    records1, records2 = read_jsonl(out1 / "metrics.jsonl"), read_jsonl(out2 / "metrics.jsonl")
    assert _strip_measured(records1) == _strip_measured(records2)
    assert _strip_measured(summary1) == _strip_measured(summary2)
    # the injected crash is a rejection in both, not a stopped run
    assert all(any(r["client"] == 4 and "ClientCrash" in r["reason"] for r in rec["rejected"]) for rec in records2)
    assert "client 4 crashed: ClientCrash" in (out2 / "run.log").read_text()  # logged by the parent


# --- the engine on its own: one round's jobs on digits -------------------------------------

SPEC = ModelSpec("cnn-small", (1, 8, 8), 10, {}, seed=3)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return load_dataset("digits")


def _jobs(n=3, crash=None, steps=2):
    tier = TierConfig(name="t", share=1.0, max_iter=8, local_steps=steps)
    options = TrainOptions(lr=0.05, momentum=0.9, weight_decay=0.0, batch_size=8, proximal_mu=0.0,
                           residual_samples=8)
    jobs = []
    for cid in range(n):
        rows = np.arange(cid * 40, cid * 40 + 40)
        task = ClientTask(round=1, seed=0, tier=tier, forward_cap=8, reference_cap=8, reference_tol=1e-3,
                          options=options, crash_at=0.5 if cid == crash else None)
        jobs.append(ClientJob(task=task, data=ClientData(cid, rows[:32], rows[32:])))
    return jobs


def _download(model):
    return encode_state(federated_state(model))


@pytest.fixture(scope="module")
def pooled(digits):
    """One pool of two workers, reused by several tests (as by the rounds of a run)."""
    engine = EmbeddedEngine(SPEC.build(), digits, workers=2, model_spec=SPEC)
    yield engine
    engine.close()
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("workers", [1, 2])
def test_replies_in_job_order_and_crash_is_a_rejection(digits, pooled, workers):
    model = SPEC.build()
    engine = pooled if workers == 2 else EmbeddedEngine(model, digits)
    replies = engine.run_clients(_jobs(crash=1), _download(model))
    assert [r.client_id for r in replies] == [0, 1, 2]
    assert replies[1].payload is None and replies[1].error.startswith("ClientCrash")
    for reply in (replies[0], replies[2]):
        assert reply.error is None and len(reply.payload) > 0
        assert decode_state(reply.payload).keys() == federated_state(model).keys()


def test_pool_replies_equal_in_process_replies(digits, pooled):
    model = SPEC.build()
    download = _download(model)
    here = EmbeddedEngine(model, digits, workers=1)
    ours = here.run_clients(_jobs(), download)
    theirs = pooled.run_clients(list(reversed(_jobs())), download)
    again = pooled.run_clients(_jobs(), download)  # the same workers, reused
    assert [r.client_id for r in theirs] == [2, 1, 0]
    for a, b, c in zip(ours, reversed(theirs), again):
        assert a.fields["metrics"].keys() == b.fields["metrics"].keys()
        assert a.payload == b.payload == c.payload  # the same bytes, whichever process trained


@pytest.mark.parametrize("workers", [1, 2])
def test_a_runtime_error_in_training_leaves_run_clients(digits, workers):
    # a model built for 28x28 images trained on 8x8 digits: a plain RuntimeError inside
    # train_client (a shape mismatch), i.e. a bug, not a declared client failure
    wrong = ModelSpec("cnn-small", (1, 28, 28), 10, {}, seed=0)
    model = wrong.build()
    before = set(multiprocessing.active_children())
    with EmbeddedEngine(model, digits, workers=workers, model_spec=wrong) as engine:
        with pytest.raises(UnexpectedClientError, match="client 0 failed in round 1") as info:
            engine.run_clients(_jobs(n=2), _download(model))
    engine.close()  # closing twice is fine
    assert set(multiprocessing.active_children()) == before  # the pool's workers are gone
    assert "RuntimeError" in str(info.value) and "Traceback" in str(info.value)
    assert ("[in a worker process]" in str(info.value)) == (workers > 1)


def test_declared_failures():
    assert issubclass(ClientCrash, ClientFailure) and issubclass(PayloadError, ClientFailure)
    with pytest.raises(PayloadError, match="not a safetensors state"):
        decode_state(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(PayloadError, match="must be bytes"):
        decode_state("text")


def test_garbled_download_is_a_rejection_not_a_stop(digits):
    model = SPEC.build()
    with EmbeddedEngine(model, digits) as engine:
        replies = engine.run_clients(_jobs(n=2), b"garbage")
    assert all(r.payload is None and r.error.startswith("PayloadError") for r in replies)


def test_arrays_open_mapped_from_their_folder(digits, tmp_path):
    from deqfl.data.folder import save_arrays  # noqa: PLC0415

    save_arrays(digits, tmp_path)
    mapped = open_arrays(tmp_path, mmap=True)
    assert isinstance(mapped.x_train, np.memmap) and not mapped.x_train.flags.writeable
    assert mapped.folder == tmp_path and mapped.mean == digits.mean
    assert np.array_equal(mapped.x_train, digits.x_train) and np.array_equal(mapped.y_test, digits.y_test)
    rows = np.array([5, 1, 9])
    assert torch.equal(mapped.normalise(mapped.x_train[rows]), digits.normalise(digits.x_train[rows]))


def test_cached_data_sets_know_their_folder(shared_data, tmp_path):
    first = load_dataset("mnist", data_dir=shared_data / "mnist", cache_dir=tmp_path)
    second = load_dataset("mnist", data_dir=shared_data / "mnist", cache_dir=tmp_path)
    assert first.folder is not None and first.folder == second.folder
    assert np.array_equal(open_arrays(first.folder, mmap=True).y_train, first.y_train)


def test_a_jobs_result_does_not_depend_on_the_jobs_before_it(digits):
    # spectral normalisation keeps per-copy power-iteration vectors (not federated) that
    # training updates: the runner resets them, so a worker that ran other clients first
    # returns what a fresh worker returns
    from torch.nn.utils.parametrizations import spectral_norm  # noqa: PLC0415

    from deqfl.engines.client_runner import ClientRunner  # noqa: PLC0415

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), spectral_norm(torch.nn.Linear(64, 10)))
    fresh = torch.nn.Sequential(torch.nn.Flatten(), spectral_norm(torch.nn.Linear(64, 10)))
    fresh.load_state_dict(model.state_dict())
    download = _download(model)
    first, second = _jobs(n=2, steps=4)
    busy = ClientRunner(model, digits)
    busy.run(first, download)
    after_other = busy.run(second, download)
    alone = ClientRunner(fresh, digits).run(second, download)
    assert after_other.payload == alone.payload


KILLED_PARENT = """
import json, os, signal, sys
import multiprocessing
from deqfl.data import load_dataset
from deqfl.engines.embedded import EmbeddedEngine
from deqfl.engines.spec import ModelSpec
from deqfl.fl.transport import decode_state, encode_state
from deqfl.models import federated_state
sys.path.insert(0, {tests!r})
from test_embedded_pool import _jobs

if __name__ == "__main__":
    spec = ModelSpec("cnn-small", (1, 8, 8), 10, {{}}, seed=0)
    model = spec.build()
    engine = EmbeddedEngine(model, load_dataset("digits"), workers=2, model_spec=spec)
    engine.run_clients(_jobs(n=2), encode_state(federated_state(model)))
    print(json.dumps({{"pids": [p.pid for p in multiprocessing.active_children()],
                      "scratch": str(engine._pool._scratch)}}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_workers_end_with_a_killed_parent(tmp_path):
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import time  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    script = tmp_path / "parent.py"
    script.write_text(KILLED_PARENT.format(tests=str(Path(__file__).parent)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == -9, done.stderr
    shown = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(shown["pids"]) == 2

    def alive(pid):  # a zombie (exited, not yet reaped) counts as ended
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False

    deadline = time.monotonic() + 30
    while any(alive(p) for p in shown["pids"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in shown["pids"])
    assert not Path(shown["scratch"]).exists()


def test_a_stale_folder_is_not_handed_to_the_workers(digits, tmp_path):
    import dataclasses  # noqa: PLC0415

    from deqfl.data.folder import save_arrays  # noqa: PLC0415
    from deqfl.engines.pool import _stored_in  # noqa: PLC0415

    save_arrays(digits, tmp_path)
    assert _stored_in(digits, tmp_path)
    other = dataclasses.replace(digits, x_train=255 - digits.x_train, folder=tmp_path)
    assert not _stored_in(other, tmp_path)
    assert not _stored_in(digits, tmp_path / "missing")
