"""FeDEQ's ADMM consensus on the Flower simulation gives the embedded engine's result: the
same bytes (only the shared part travels), the same personalised accuracies and final
model, with heads and duals kept on the nodes (`Context.state`), not on the server.
Skipped only when flwr is not installed."""

import json
import shutil
import tempfile

import pytest

pytest.importorskip("flwr")

from safetensors.torch import load_file  # noqa: E402

from deqfl.experiments.config import load_config  # noqa: E402
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


def test_fedeq_on_flower_sim_matches_embedded(flower_env):
    tmp = flower_env
    cache = f"data.cache_dir={json.dumps(str(tmp / 'cache'))}"
    run_experiment(load_config(None, SMALL + [cache]), tmp / "embedded")
    run_experiment(load_config(None, SMALL + [cache, 'experiment.engine="flower-sim"']), tmp / "sim")
    emb, sim = read_jsonl(tmp / "embedded" / "metrics.jsonl"), read_jsonl(tmp / "sim" / "metrics.jsonl")
    assert [(r["bytes_up"], r["bytes_down"], r["rejected"]) for r in emb] == [(r["bytes_up"], r["bytes_down"], r["rejected"]) for r in sim]
    for e, s in zip(emb, sim):
        assert e["personal_accuracy"]["clients"] == s["personal_accuracy"]["clients"] == 4
        assert e["personal_accuracy"]["mean"] == pytest.approx(s["personal_accuracy"]["mean"], abs=1e-9)
        assert e["personal_accuracy"]["p10"] == pytest.approx(s["personal_accuracy"]["p10"], abs=1e-9)
    a, b = load_file(str(tmp / "embedded" / "model.safetensors")), load_file(str(tmp / "sim" / "model.safetensors"))
    assert max(float((a[k].double() - b[k].double()).abs().max()) for k in a) <= 1e-5
    assert any((tmp / "embedded" / "client_state").iterdir())
    assert not any((tmp / "sim" / "client_state").iterdir())  # heads and duals stayed on the nodes
