import torch

from deqfl.fl.checkpoint import load_latest_checkpoint, save_checkpoint
from deqfl.fl.transport import decode_state, encode_state


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
