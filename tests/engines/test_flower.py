"""The Flower engines against the embedded one (issue 5): simulation equivalence, a real
loopback deployment (plain with a SuperNode killed mid-run, and TLS with SuperNode
authentication). Skipped only when flwr is not installed (`pip install -e '.[flower]'`)."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from safetensors.torch import load_file  # noqa: E402

from deqfl.engines.flower.fleet import Fleet, _children, make_certs  # noqa: E402
from deqfl.errors import ConfigError  # noqa: E402
from deqfl.experiments.config import load_config  # noqa: E402
from deqfl.experiments.engines import run_on_superlink  # noqa: E402
from deqfl.experiments.flower_app import APP_TOML  # noqa: E402
from deqfl.experiments.results import read_jsonl  # noqa: E402
from deqfl.experiments.runner import run_experiment  # noqa: E402
from deqfl.fl.checkpoint import CLIENT_STATE_DIR  # noqa: E402
from deqfl.fl.client_state import ClientStateStore  # noqa: E402

SMALL = [
    "data.dataset=digits", "data.alpha=1.0", "data.eval_subset=0", "experiment.rounds=2",
    "sampling.fraction=1.0", "train.batch_size=16", "evaluation.anytime_every=0",
    "experiment.threads=1",
]


@pytest.fixture()
def flower_env(tmp_path, monkeypatch):
    """Offline, no telemetry, Ray's folder inside the test (short path: Ray's sockets)."""
    ray_tmp = tempfile.mkdtemp(prefix="deqfl-ray-")
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    monkeypatch.setenv("DEQFL_CACHE_DIR", str(tmp_path / "cache"))
    yield tmp_path
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _config(tmp_path, clients, *extra):
    return load_config(None, SMALL + [f"data.num_clients={clients}", f"data.cache_dir={json.dumps(str(tmp_path / 'cache'))}", *extra])


def _max_diff(a: Path, b: Path) -> float:
    ma, mb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert ma.keys() == mb.keys()
    return max(float((ma[k].double() - mb[k].double()).abs().max()) for k in ma)


def _state_diff(a: Path, b: Path) -> float:
    """The largest difference between two runs' stored client states (same clients and keys)."""
    sa, sb = ClientStateStore(a / CLIENT_STATE_DIR), ClientStateStore(b / CLIENT_STATE_DIR)
    assert sa.clients() == sb.clients() and sa.clients()
    diffs = []
    for cid in sa.clients():
        ta, tb = sa.get(cid), sb.get(cid)
        assert ta.keys() == tb.keys()
        diffs += [float((ta[k].double() - tb[k].double()).abs().max()) for k in ta]
    return max(diffs)


def _weights(out: Path):
    return [[(c["id"], c["weight"]) for c in r["clients"]] for r in read_jsonl(out / "metrics.jsonl")]


def _assert_results(out: Path, rounds: int = 2):
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["round"] for r in records] == list(range(1, rounds + 1))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == rounds and 0 <= summary["final_accuracy"] <= 1
    assert (out / "config.toml").exists() and (out / "model.safetensors").exists()
    return records, summary


def test_flower_sim_matches_embedded(flower_env):
    tmp = flower_env
    run_experiment(_config(tmp, 4), tmp / "embedded")
    seen = []
    summary = run_experiment(_config(tmp, 4, 'experiment.engine="flower-sim"'), tmp / "sim", on_round=seen.append)
    assert [r["round"] for r in seen] == [1, 2] and summary["engine"] == "flower-sim"
    _assert_results(tmp / "sim")
    assert _max_diff(tmp / "embedded", tmp / "sim") <= 1e-5
    assert _weights(tmp / "embedded") == _weights(tmp / "sim")
    emb, sim = read_jsonl(tmp / "embedded" / "metrics.jsonl"), read_jsonl(tmp / "sim" / "metrics.jsonl")
    assert [(r["bytes_up"], r["bytes_down"], r["rejected"]) for r in emb] == [(r["bytes_up"], r["bytes_down"], r["rejected"]) for r in sim]


def test_run_experiment_runs_the_configs_flower_simulation(flower_env):
    """`run_experiment` honours experiment.engine = "flower-sim" (issue 15; it ran the
    embedded engine): the clients train in Flower's ClientApp on Ray, which alone writes
    the partition cache and Ray's session folder; a used run directory is refused first."""
    tmp = flower_env
    config = _config(tmp, 2, 'experiment.engine="flower-sim"', "experiment.rounds=1")
    seen = []
    summary = run_experiment(config, tmp / "sim", on_round=seen.append)
    assert summary["engine"] == "flower-sim" and [r["round"] for r in seen] == [1]
    assert [c["id"] for c in seen[0]["clients"]] == [0, 1] and seen[0]["rejected"] == []
    assert len(list((tmp / "cache" / "flower-partitions").glob("*.npz"))) == 1
    assert list(Path(os.environ["RAY_TMPDIR"]).glob("session_*"))
    with pytest.raises(ConfigError, match="already holds a run"):
        run_experiment(config, tmp / "sim")


def test_flower_sim_carries_attacks_and_crashes(flower_env):
    """A scaling attacker and a crashing client act on the Flower simulation exactly as on
    the embedded engine: same rejected clients, same malicious weight, same final model."""
    tmp = flower_env
    extra = ("experiment.rounds=1", "attack.kind=scale", "attack.clients=[1]", "faults.crash_clients=[2]")
    run_experiment(_config(tmp, 4, *extra), tmp / "embedded")
    run_experiment(_config(tmp, 4, 'experiment.engine="flower-sim"', *extra), tmp / "sim")
    (emb,), (sim,) = read_jsonl(tmp / "embedded" / "metrics.jsonl"), read_jsonl(tmp / "sim" / "metrics.jsonl")
    assert [r["client"] for r in emb["rejected"]] == [r["client"] for r in sim["rejected"]] == [2]
    assert emb["malicious"] == sim["malicious"] == [1]
    assert emb["malicious_weight"] == pytest.approx(sim["malicious_weight"]) and emb["malicious_weight"] > 0
    assert _max_diff(tmp / "embedded", tmp / "sim") <= 1e-5


def test_flower_sim_carries_local_dp(flower_env):
    """Local DP (each client clips and noises its own update, seeded by seed, round and
    client) gives the same outcome on the Flower simulation as on the embedded engine:
    same weights, same epsilon, same final model; and the noise is real (the model differs
    from the run without DP)."""
    tmp = flower_env
    extra = ("experiment.rounds=1", "privacy.mode=local", "privacy.clip_norm=0.5", "privacy.noise_multiplier=0.3",
             "fusion.weighting=uniform", "fusion.aggregator=mean")
    run_experiment(_config(tmp, 4, *extra), tmp / "embedded")
    run_experiment(_config(tmp, 4, 'experiment.engine="flower-sim"', *extra), tmp / "sim")
    run_experiment(_config(tmp, 4, "experiment.rounds=1", "fusion.weighting=uniform"), tmp / "plain")
    (emb,), (sim,) = read_jsonl(tmp / "embedded" / "metrics.jsonl"), read_jsonl(tmp / "sim" / "metrics.jsonl")
    assert emb["epsilon"] == sim["epsilon"] and emb["epsilon"] is not None
    assert _weights(tmp / "embedded") == _weights(tmp / "sim") and len(emb["clients"]) == 4
    assert _max_diff(tmp / "embedded", tmp / "sim") <= 1e-5
    assert _max_diff(tmp / "embedded", tmp / "plain") > 1e-3


def test_flower_sim_carries_heterofl_sub_models(flower_env):
    """Width-sliced tiers (HeteroFL) on the Flower simulation: the ClientApp trains the
    sub-model and the server embeds it, with the embedded engine's bytes and final model."""
    tmp = flower_env
    extra = ("experiment.rounds=1", "model.name=cnn-small", "fusion.weighting=examples", "fusion.aggregator=heterofl",
             "fleet.tiers=[{name='strong', share=0.5}, {name='weak', share=0.5, width=0.5}]")
    run_experiment(_config(tmp, 4, *extra), tmp / "embedded")
    run_experiment(_config(tmp, 4, 'experiment.engine="flower-sim"', *extra), tmp / "sim")
    (emb,), (sim,) = read_jsonl(tmp / "embedded" / "metrics.jsonl"), read_jsonl(tmp / "sim" / "metrics.jsonl")
    assert not emb["rejected"] and not sim["rejected"]
    assert [(c["tier"], c["bytes_up"]) for c in emb["clients"]] == [(c["tier"], c["bytes_up"]) for c in sim["clients"]]
    assert (emb["bytes_up"], emb["bytes_down"]) == (sim["bytes_up"], sim["bytes_down"])
    assert _max_diff(tmp / "embedded", tmp / "sim") <= 1e-5


def test_flower_sim_keeps_scaffold_client_state_in_the_servers_store(flower_env):
    """SCAFFOLD on the Flower simulation: c travels in the download, delta c_i in the upload
    (same bytes as embedded); each client's c_i goes back with its reply into the server's
    store and comes with its next task (round 2 corrects with it), so the final model and
    the stored c_i match the embedded engine's."""
    tmp = flower_env
    extra = ('fusion.control_variates="scaffold"', "train.momentum=0.5")
    run_experiment(_config(tmp, 4, *extra), tmp / "embedded")
    run_experiment(_config(tmp, 4, 'experiment.engine="flower-sim"', *extra), tmp / "sim")
    emb, sim = read_jsonl(tmp / "embedded" / "metrics.jsonl"), read_jsonl(tmp / "sim" / "metrics.jsonl")
    assert [(r["bytes_up"], r["bytes_down"], r["rejected"]) for r in emb] == [(r["bytes_up"], r["bytes_down"], r["rejected"]) for r in sim]
    assert _max_diff(tmp / "embedded", tmp / "sim") <= 1e-5
    assert _state_diff(tmp / "embedded", tmp / "sim") <= 1e-5


def test_flower_sim_keeps_the_warm_start_cache_in_the_servers_store(flower_env):
    """Warm starts on the Flower simulation: each client's cache goes back with its reply
    into the server's store, uncounted, and comes with its next task (round 2 starts warm
    from it), and the run matches the embedded engine's (iterations and caches included)."""
    tmp = flower_env
    extra = ("train.warm_start=true", "model.options={max_norm=2.0}")
    run_experiment(_config(tmp, 4, *extra), tmp / "embedded")
    run_experiment(_config(tmp, 4, 'experiment.engine="flower-sim"', *extra), tmp / "sim")
    emb, sim = read_jsonl(tmp / "embedded" / "metrics.jsonl"), read_jsonl(tmp / "sim" / "metrics.jsonl")
    assert [(r["bytes_up"], r["bytes_down"], r["rejected"]) for r in emb] == [(r["bytes_up"], r["bytes_down"], r["rejected"]) for r in sim]
    iterations = [[c["iterations"] for r in rs for c in r["clients"]] for rs in (emb, sim)]
    assert iterations[0] == pytest.approx(iterations[1], abs=1e-6)
    assert _max_diff(tmp / "embedded", tmp / "sim") <= 1e-5
    assert _state_diff(tmp / "embedded", tmp / "sim") <= 1e-5


def _stopped(fleet: Fleet, pids: list[int]) -> bool:
    return all(p.poll() is not None for p in fleet.procs.values()) and not any(Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid) for pid in pids)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


def test_deployment_plain_survives_a_killed_supernode(flower_env):
    tmp = flower_env
    fleet = Fleet(3, tmp / "fleet", max_seconds=400)
    pids: list[int] = []
    try:
        fleet.start()
        config = _config(tmp, 3, 'experiment.engine="flower"', f'flower.superlink="{fleet.address}"',
                         "flower.round_timeout=90")

        def on_round(record):
            if record["round"] == 1:
                pids.extend(fleet.pids() + [c for p in fleet.pids() for c in _children(p)])
                fleet.kill_node(2)

        summary = run_on_superlink(config, tmp / "run", on_round=on_round, timeout=360)
        records, _ = _assert_results(tmp / "run")
        assert summary["engine"] == "flower"
        assert records[0]["rejected"] == [] and [c["id"] for c in records[0]["clients"]] == [0, 1, 2]
        # round 2 may have been sent before the kill: either way client 2's update is lost
        assert [c["id"] for c in records[1]["clients"]] == [0, 1]
        assert [r["client"] for r in records[1]["rejected"]] == [2]
        assert "node" in records[1]["rejected"][0]["reason"]
    finally:
        pids.extend(fleet.pids())
        fleet.stop()
    assert _stopped(fleet, pids)


def test_deployment_carries_an_attack_against_krum(flower_env):
    """A scaling attacker (x + 10 Delta) on a loopback deployment (a SuperLink and 4
    SuperNodes, one ClientApp process per message) against Krum: the attacker gets no
    weight, and the round is the embedded engine's (same malicious set, weights, model)."""
    tmp = flower_env
    extra = ("experiment.rounds=1", "attack.kind=scale", "attack.clients=[1]", "fusion.aggregator=krum",
             "fusion.weighting=uniform")
    run_experiment(_config(tmp, 4, *extra), tmp / "embedded")
    fleet = Fleet(4, tmp / "fleet", max_seconds=300)
    pids: list[int] = []
    try:
        fleet.start()
        config = _config(tmp, 4, *extra, 'experiment.engine="flower"', f'flower.superlink="{fleet.address}"',
                         "flower.round_timeout=120")
        run_on_superlink(config, tmp / "run", timeout=240)
        pids.extend(fleet.pids() + [c for p in fleet.pids() for c in _children(p)])
    finally:
        pids.extend(fleet.pids())
        fleet.stop()
    assert _stopped(fleet, pids)
    _assert_results(tmp / "run", rounds=1)
    (emb,), (dep,) = read_jsonl(tmp / "embedded" / "metrics.jsonl"), read_jsonl(tmp / "run" / "metrics.jsonl")
    assert emb["malicious"] == dep["malicious"] == [1] and emb["rejected"] == dep["rejected"] == []
    assert emb["malicious_weight"] == dep["malicious_weight"] == 0.0
    assert _weights(tmp / "embedded") == _weights(tmp / "run")
    assert _max_diff(tmp / "embedded", tmp / "run") <= 1e-5


def test_deployment_tls_with_supernode_auth(flower_env):
    tmp = flower_env
    certs = make_certs(tmp / "certs", nodes=3)
    fleet = Fleet(3, tmp / "fleet", tls=certs, auth_keys=[tmp / "certs" / f"node-{k}" for k in range(3)], max_seconds=300)
    pids: list[int] = []
    try:
        fleet.start()
        config = _config(tmp, 3, 'experiment.engine="flower"', f'flower.superlink="{fleet.address}"',
                         f"flower.root_certificates={json.dumps(str(certs.ca_cert))}", "flower.round_timeout=120")
        run_on_superlink(config, tmp / "run", timeout=280)
        records, summary = _assert_results(tmp / "run")
        assert all(r["rejected"] == [] for r in records) and summary["final_accuracy"] > 0.3
        pids.extend(fleet.pids() + [c for p in fleet.pids() for c in _children(p)])
    finally:
        pids.extend(fleet.pids())
        fleet.stop()
    assert _stopped(fleet, pids)


def test_pyproject_declares_the_same_flower_app():
    import tomllib

    root = Path(__file__).resolve().parents[2]
    declared = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert declared == tomllib.loads(APP_TOML)["tool"]["flwr"]["app"]
