import json

import pytest
import torch
from safetensors.torch import save_file

from deqfl.fl.checkpoint import CheckpointError, load_latest_checkpoint, save_checkpoint
from deqfl.fl.client_state import ClientStateStore
from deqfl.fl.transport import decode_state, encode_state

HASH = "c0ffee"


def test_checkpoints_keep_the_last_two_and_skip_corrupt_ones(tmp_path):
    states = {r: {"w": torch.full((3,), float(r))} for r in (1, 2, 3)}
    for r, s in states.items():
        save_checkpoint(tmp_path, r, s, {"wall_seconds": r})
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["round-00002", "round-00003"]
    latest = load_latest_checkpoint(tmp_path)
    assert latest.round == 3 and torch.equal(latest.state["w"], states[3]["w"])
    assert latest.extra == {"wall_seconds": 3}
    # truncate the newest: the previous one is used
    model = tmp_path / "checkpoints" / "round-00003" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:20])
    fallback = load_latest_checkpoint(tmp_path)
    assert fallback.round == 2 and torch.equal(fallback.state["w"], states[2]["w"])


def test_no_checkpoint_gives_none(tmp_path):
    assert load_latest_checkpoint(tmp_path) is None


def _model(r):
    return {"w": torch.full((2, 3), float(r)), "steps": torch.tensor([r])}


def _save_rounds(root, rounds=(1, 2)):
    """Round r: model r, rule state r, and a store where client r changed (its file differs
    from the previous checkpoint's) while client 0 did not (one file shared by both)."""
    store = ClientStateStore(root / "client_state")
    store.put(0, {"c": torch.zeros(3)})
    for r in rounds:
        store.put(r, {"c": torch.full((3,), float(r))})
        save_checkpoint(root, r, _model(r), {"wall_seconds": r}, fusion_state={"m": torch.full((3,), r / 2)},
                        client_state=store, config_hash=HASH)
    return store


def test_a_checkpoint_holds_model_rule_state_and_client_store(tmp_path):
    store = _save_rounds(tmp_path)
    store.put(2, {"c": torch.full((3,), 99.0)})  # after the checkpoint
    store.put(5, {"c": torch.ones(3)})
    ckpt = load_latest_checkpoint(tmp_path, reference=_model(0), config_hash=HASH)
    assert ckpt.round == 2 and ckpt.extra == {"wall_seconds": 2}
    assert torch.equal(ckpt.state["w"], _model(2)["w"]) and torch.equal(ckpt.fusion_state["m"], torch.full((3,), 1.0))
    store.restore(ckpt.client_state)
    assert store.clients() == [0, 1, 2]
    assert torch.equal(store.get(2)["c"], torch.full((3,), 2.0)) and torch.equal(store.get(0)["c"], torch.zeros(3))


def _rewrite_model(path, model):
    """A consistent checkpoint (digests and checksum recomputed) whose model is `model`:
    what a bug that saved garbage would leave, which only the value checks can catch."""
    from deqfl.fl.checkpoint import json_digest
    from deqfl.fl.client_state import tensor_digest

    save_file(model, str(path / "model.safetensors"))
    record = json.loads((path / "state.json").read_text())
    record["digests"]["model"] = tensor_digest(model)
    record.pop("checksum")
    record["checksum"] = json_digest(record)
    (path / "state.json").write_text(json.dumps(record))


def _flip_byte(file, offset=-2):
    data = bytearray(file.read_bytes())
    data[offset] ^= 0x10
    file.write_bytes(bytes(data))


DAMAGE = {
    "nan": (lambda p: _rewrite_model(p, {**_model(2), "w": torch.full((2, 3), float("nan"))}),
            "model has non-finite values in 'w'"),
    "retyped": (lambda p: _rewrite_model(p, {**_model(2), "w": torch.full((2, 3), 2.0, dtype=torch.float64)}),
                "model tensor 'w' is torch.float64 (2, 3), expected torch.float32 (2, 3)"),
    "reshaped": (lambda p: _rewrite_model(p, {**_model(2), "w": torch.full((3, 2), 2.0)}), "expected torch.float32 (2, 3)"),
    "missing-key": (lambda p: _rewrite_model(p, {"w": _model(2)["w"]}), "model keys differ: missing ['steps']"),
    "retyped-file": (lambda p: save_file({**_model(2), "w": _model(2)["w"].double()}, str(p / "model.safetensors")),
                     "model does not match its digest"),
    "flipped-model-byte": (lambda p: _flip_byte(p / "model.safetensors"), "model does not match its digest"),
    "flipped-rule-byte": (lambda p: _flip_byte(p / "fusion.safetensors"), "fusion rule state does not match"),
    "flipped-client-byte": (lambda p: _flip_byte(p / "client_state" / "client-2.safetensors"), "does not match its digest"),
    "flipped-header-byte": (lambda p: _flip_byte(p / "model.safetensors", 12), "model"),
    "edited-state-json": (lambda p: (p / "state.json").write_text((p / "state.json").read_text().replace(
        '"wall_seconds": 2', '"wall_seconds": 3')), "state.json does not match its checksum"),
    "lost-client-file": (lambda p: (p / "client_state" / "client-2.safetensors").unlink(), "missing [2]"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_bad_newest_checkpoint_falls_back_to_the_older_good_one(tmp_path, damage, caplog):
    _save_rounds(tmp_path)
    newest = tmp_path / "checkpoints" / "round-00002"
    harm, reason = DAMAGE[damage]
    harm(newest)
    with caplog.at_level("WARNING", logger="deqfl"):
        ckpt = load_latest_checkpoint(tmp_path, reference=_model(0), config_hash=HASH)
    assert ckpt.round == 1 and torch.equal(ckpt.state["w"], _model(1)["w"])
    assert torch.equal(ckpt.fusion_state["m"], torch.full((3,), 0.5)) and sorted(ckpt.client_state.digests) == [0, 1]
    line = next(r.getMessage() for r in caplog.records if str(newest) in r.getMessage())
    assert "trying the previous one" in line
    if damage != "flipped-header-byte":  # a flipped header byte fails wherever it lands
        assert reason in line, line


def test_another_configs_checkpoints_are_refused_and_none_good_is_an_error(tmp_path):
    _save_rounds(tmp_path)
    with pytest.raises(CheckpointError, match="round-00002: it was written under another config") as err:
        load_latest_checkpoint(tmp_path, reference=_model(0), config_hash="another")
    assert "round-00001: it was written under another config" in str(err.value)
    assert "Delete" in str(err.value)


def test_a_checkpoint_from_before_checksums_is_still_resumable(tmp_path):
    legacy = tmp_path / "checkpoints" / "round-00004"
    legacy.mkdir(parents=True)
    save_file(_model(4), str(legacy / "model.safetensors"))
    (legacy / "state.json").write_text(json.dumps({"round": 4, "wall_seconds": 1.5}))
    ckpt = load_latest_checkpoint(tmp_path, reference=_model(0), config_hash=HASH)
    assert ckpt.round == 4 and ckpt.extra == {"wall_seconds": 1.5}
    assert ckpt.fusion_state == {} and ckpt.client_state is None
    save_file({**_model(4), "w": torch.full((2, 3), float("inf"))}, str(legacy / "model.safetensors"))
    with pytest.raises(CheckpointError, match="non-finite"):
        load_latest_checkpoint(tmp_path, reference=_model(0))


def test_transport_roundtrip_and_fp16_halves_the_bytes():
    state = {"a": torch.randn(100, 10), "steps": torch.tensor([3], dtype=torch.int64)}
    full = encode_state(state)
    half = encode_state(state, "float16")
    back = decode_state(full, like=state)
    assert torch.equal(back["a"], state["a"]) and torch.equal(back["steps"], state["steps"])
    assert len(half) < 0.6 * len(full)
    approx = decode_state(half, like=state)
    assert approx["a"].dtype == torch.float32
    assert torch.allclose(approx["a"], state["a"], atol=1e-2)
