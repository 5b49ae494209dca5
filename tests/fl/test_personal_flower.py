"""FeDEQ's ADMM consensus on the Flower simulation and on a real loopback deployment gives
the embedded engine's result: the same bytes (only the shared part travels), the same
personalised accuracies and final model. A simulation keeps heads and duals in the
server's store (so `--resume` restores them); a deployment keeps them on the nodes
(`Context.state`), not on the server. Skipped only when flwr is not installed."""

import json
import shutil
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from safetensors.torch import load_file  # noqa: E402

from deqfl.engines.flower.fleet import Fleet, _children  # noqa: E402
from deqfl.experiments.config import load_config  # noqa: E402
from deqfl.experiments.engines import run_on_superlink  # noqa: E402
from deqfl.experiments.results import read_jsonl  # noqa: E402
from deqfl.experiments.runner import run_experiment  # noqa: E402
from deqfl.fl.checkpoint import CLIENT_STATE_DIR  # noqa: E402
from deqfl.fl.client_state import ClientStateStore  # noqa: E402

SMALL = [
    "data.dataset=digits", "data.alpha=1.0", "data.eval_subset=0", "experiment.rounds=2", "data.num_clients=4",
    "sampling.fraction=1.0", "train.batch_size=16", "evaluation.anytime_every=0", "experiment.threads=1",
    "personalization.algorithm=fedeq", "personalization.options={rho=0.1}", "personalization.test_rows=40",
]


@pytest.fixture()
def flower_env(tmp_path, monkeypatch):
    ray_tmp = tempfile.mkdtemp(prefix="deqfl-ray-")
    for key, value in (("FLWR_TELEMETRY_ENABLED", "0"), ("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"),
                       ("RAY_TMPDIR", ray_tmp), ("DEQFL_CACHE_DIR", str(tmp_path / "cache"))):
        monkeypatch.setenv(key, value)
    yield tmp_path
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _assert_same_personal_run(emb_dir, other_dir):
    emb, other = read_jsonl(emb_dir / "metrics.jsonl"), read_jsonl(other_dir / "metrics.jsonl")
    assert len(emb) == len(other) == 2
    assert [(r["bytes_up"], r["bytes_down"], r["rejected"]) for r in emb] == [(r["bytes_up"], r["bytes_down"], r["rejected"]) for r in other]
    for e, s in zip(emb, other):
        assert e["personal_accuracy"]["clients"] == s["personal_accuracy"]["clients"] == 4
        assert e["personal_accuracy"]["mean"] == pytest.approx(s["personal_accuracy"]["mean"], abs=1e-9)
        assert e["personal_accuracy"]["p10"] == pytest.approx(s["personal_accuracy"]["p10"], abs=1e-9)
    a, b = load_file(str(emb_dir / "model.safetensors")), load_file(str(other_dir / "model.safetensors"))
    assert max(float((a[k].double() - b[k].double()).abs().max()) for k in a) <= 1e-5


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie (a zombie's command line is empty)."""
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False


def _client_states(run_dir):
    store = ClientStateStore(run_dir / CLIENT_STATE_DIR)
    return {cid: store.get(cid) for cid in store.clients()}


def test_fedeq_on_flower_sim_resumes_its_heads_and_duals_and_matches_embedded(flower_env):
    """Under flower-sim the server's store keeps each client's head and dual (they travel
    with its task and its reply, not counted as bytes), so a simulation stopped after
    round 1 and resumed ends as the embedded engine's uninterrupted run, with the same
    client state."""
    tmp = flower_env
    cache = f"data.cache_dir={json.dumps(str(tmp / 'cache'))}"
    run_experiment(load_config(None, SMALL + [cache]), tmp / "embedded")
    sim = load_config(None, SMALL + [cache, 'experiment.engine="flower-sim"'])
    run_experiment(sim, tmp / "sim", stop_after=1)
    assert len(_client_states(tmp / "sim")) == 4  # round 1's heads and duals reached the server's store
    run_experiment(sim, tmp / "sim", resume=True)
    _assert_same_personal_run(tmp / "embedded", tmp / "sim")
    embedded, simulated = _client_states(tmp / "embedded"), _client_states(tmp / "sim")
    assert sorted(embedded) == sorted(simulated) == [0, 1, 2, 3]
    for cid, state in embedded.items():
        assert sorted(state) == sorted(simulated[cid]) and any(k.startswith("dual/") for k in state)
        assert max(float((state[k].double() - simulated[cid][k].double()).abs().max()) for k in state) <= 1e-5


def test_fedeq_on_a_loopback_deployment_keeps_heads_and_duals_on_the_nodes(flower_env):
    """A SuperLink and 4 SuperNodes on 127.0.0.1 (one ClientApp process per message): each
    node's head and dual come back in round 2 from its own `Context.state`, so the round
    matches the embedded engine's, and the server's run holds no client state."""
    tmp = flower_env
    cache = f"data.cache_dir={json.dumps(str(tmp / 'cache'))}"
    run_experiment(load_config(None, SMALL + [cache]), tmp / "embedded")
    fleet = Fleet(4, tmp / "fleet", max_seconds=400)
    pids: list[int] = []
    try:
        fleet.start()
        config = load_config(None, SMALL + [cache, 'experiment.engine="flower"', f'flower.superlink="{fleet.address}"',
                                            "flower.round_timeout=150"])
        run_on_superlink(config, tmp / "run", timeout=360)
        pids.extend(fleet.pids() + [c for p in fleet.pids() for c in _children(p)])
    finally:
        pids.extend(fleet.pids())
        fleet.stop()
    assert all(p.poll() is not None for p in fleet.procs.values())
    assert not any(_alive(pid) for pid in pids)  # the ClientApp processes too
    _assert_same_personal_run(tmp / "embedded", tmp / "run")
    state = tmp / "run" / "client_state"
    assert not state.exists() or not any(state.iterdir())  # heads and duals stayed on the nodes
