"""Injected faults end to end: a crashing client, a straggler past the deadline and a NaN
attacker in the same run; the server killed with SIGKILL mid-run and resumed (with a torn
metrics line and a truncated newest checkpoint) ends with the same model, bitwise."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from deqfl.cli.main import main
from deqfl.experiments.config import load_config
from deqfl.experiments.results import read_jsonl
from deqfl.experiments.runner import run_experiment
from deqfl.fl.faults import FaultsConfig, crash_at, crash_step


def test_crash_straggler_and_nan_attacker_in_one_run(run_small):
    out, summary = run_small("faults", [
        "faults.crash_clients=[0]", "faults.straggler_clients=[1]", "faults.straggler_slowdown=1e5",
        "sampling.deadline_seconds=50.0", "attack.kind=inject-nan", "attack.clients=[2]",
    ])
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["round"] for r in records] == [1, 2]
    assert summary["malicious"] == [2] and summary["final_accuracy"] > 0.3
    model = load_file(str(out / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in model.values() if v.is_floating_point())
    for r in records:
        reasons = {x["client"]: x["reason"] for x in r["rejected"]}
        assert "ClientCrash" in reasons[0] and "straggler" in reasons[1] and "non-finite" in reasons[2]
        assert sorted(c["id"] for c in r["clients"]) == [3, 4] and not r["skipped"]
        assert r["malicious"] == [2] and r["malicious_weight"] == 0.0
        assert r["simulated_seconds"] == 50.0  # the round waited for the deadline, not the straggler
    log = (out / "run.log").read_text()
    for culprit in ("client 0 crashed", "client 1 dropped: straggler", "rejected update of client 2"):
        assert culprit in log


def test_crash_decisions_are_seeded():
    faults = FaultsConfig(crash_probability=0.5, crash_at=0.25)
    draws = [crash_at(faults, 0, r, c) for r in range(1, 6) for c in range(6)]
    assert draws == [crash_at(faults, 0, r, c) for r in range(1, 6) for c in range(6)]
    assert set(draws) == {None, 0.25}
    assert crash_at(FaultsConfig(crash_clients=[3]), 0, 1, 3) == 0.5 and crash_at(None, 0, 1, 3) is None
    assert crash_step(0.5, 10) == 5 and crash_step(0.0, 1) == 0 and crash_step(None, 3) is None


KILL_RUN = ["experiment.rounds=3", "data.num_clients=4", "data.train_subset=400"]


def test_sigkill_then_resume_gives_the_uninterrupted_model_bitwise(run_small, tmp_path):
    overrides = run_small.overrides(KILL_RUN)
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "deqfl.cli.main", "run", "--quiet", "--out", str(out)]
    for item in overrides:
        command += ["--set", item]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoints" / "round-00002").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists(), "the run finished before it was killed"

    # the worst leftovers a crash can leave: a torn metrics line, a truncated newest checkpoint
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write('{"round": 3, "accur')
    newest = sorted((out / "checkpoints").glob("round-*"))[-1]
    data = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(data[: len(data) // 2])

    assert main(["run", "--quiet", "--resume", str(out)]) == 0
    log = (out / "run.log").read_text()
    assert f"checkpoint {newest} is unreadable" in log and "resuming after round" in log
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["round"] for r in records] == [1, 2, 3]
    for line in (out / "metrics.jsonl").read_text().splitlines():
        json.loads(line)  # no torn line is left behind

    reference = tmp_path / "uninterrupted"
    run_experiment(load_config(None, overrides), reference)
    resumed, full = load_file(str(out / "model.safetensors")), load_file(str(reference / "model.safetensors"))
    assert resumed.keys() == full.keys()
    assert all(torch.equal(resumed[k], full[k]) for k in full)
    assert [r["accuracy"] for r in records] == [r["accuracy"] for r in read_jsonl(reference / "metrics.jsonl")]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing-state"])
def test_a_damaged_newest_checkpoint_falls_back_with_a_clear_log_line(tmp_path, damage, caplog):
    from deqfl.fl.checkpoint import load_latest_checkpoint, save_checkpoint  # noqa: PLC0415

    for r in (1, 2):
        save_checkpoint(tmp_path, r, {"w": torch.full((3,), float(r))}, {"wall_seconds": r})
    newest = tmp_path / "checkpoints" / "round-00002"
    if damage == "truncate":
        (newest / "model.safetensors").write_bytes((newest / "model.safetensors").read_bytes()[:20])
    elif damage == "garbage":
        (newest / "state.json").write_text("{not json")
    else:
        (newest / "state.json").unlink()
    with caplog.at_level("WARNING", logger="deqfl"):
        checkpoint = load_latest_checkpoint(tmp_path)
    assert checkpoint.round == 1 and torch.equal(checkpoint.state["w"], torch.ones(3))
    assert f"checkpoint {newest} is unreadable" in caplog.text
