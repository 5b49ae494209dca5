"""FeDEQ's ADMM consensus on the Flower simulation and on a real loopback deployment gives
the embedded engine's result: the same bytes (only the shared part travels), the same
personalised accuracies and final model, with heads and duals kept on the nodes
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


def test_fedeq_on_flower_sim_matches_embedded(flower_env):
    tmp = flower_env
    cache = f"data.cache_dir={json.dumps(str(tmp / 'cache'))}"
    run_experiment(load_config(None, SMALL + [cache]), tmp / "embedded")
    run_experiment(load_config(None, SMALL + [cache, 'experiment.engine="flower-sim"']), tmp / "sim")
    _assert_same_personal_run(tmp / "embedded", tmp / "sim")
    assert any((tmp / "embedded" / "client_state").iterdir())
    assert not any((tmp / "sim" / "client_state").iterdir())  # heads and duals stayed on the nodes


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
