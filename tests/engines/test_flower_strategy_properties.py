"""Property-based tests (hypothesis) of the Flower engine's reply path: arbitrary replies,
as real flwr `Message`s, go through `GridEngine` (node queries, pushes, pulls),
`DeqflStrategy.aggregate_train` and the server round. Nothing raises; a reply that is not
a usable update (an error, silence, garbage records, wrong-typed, huge or NaN fields, a
non-finite state) is rejected with a reason; a sound one is accepted; the round always
ends with a finite model of the global model's shapes.

The grid is a stand-in for the SuperLink's (`InMemoryGrid`'s push/pull contract: push
gives each message an id, pull returns the replies to given ids); replies are built the
supported way, `Message(content | Error, reply_to=message)`, with the task identity set
as in a ServerApp process."""

from __future__ import annotations

import contextlib
import json
import math
import uuid

import numpy as np
import pytest
import torch

pytest.importorskip("flwr")

from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from deqfl.engines.flower import protocol as P  # noqa: E402
from deqfl.engines.flower.engine import GridEngine  # noqa: E402
from deqfl.engines.flower.strategy import DeqflStrategy  # noqa: E402
from deqfl.fl.client import ClientData, TrainOptions  # noqa: E402
from deqfl.fl.fusion import ClientUpdate, Fusion, FusionConfig  # noqa: E402
from deqfl.fl.profiles import TierConfig  # noqa: E402
from deqfl.fl.reply import MAX_TEXT, update_fields  # noqa: E402
from deqfl.fl.server import RoundSettings, run_round  # noqa: E402
from deqfl.fl.transport import encode_state  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

N = 5
NODE = {cid: 7000 + cid for cid in range(N)}  # Flower's node id of client cid
STRANGER = 9999
GLOBAL = {"w": torch.linspace(-1, 1, 6).reshape(2, 3), "b": torch.zeros(3), "n": torch.tensor(2)}
TIERS = [TierConfig(name="t", share=1.0, speed=1e-5)] * N
CLIENTS = [ClientData(c, np.arange(10 * c, 10 * c + 8), np.arange(10 * c + 8, 10 * c + 10)) for c in range(N)]
OPTIONS = TrainOptions(lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=4, proximal_mu=0.0, residual_samples=4)
ROUND = RoundSettings(seed=0, fraction=1.0, min_clients=1, rule="uniform", min_forward_cap=1, deadline_seconds=None,
                      transport_dtype="float32", reference_cap=16, reference_tol=1e-3, options=OPTIONS)
CONFIG_TEXT = '[data]\nnum_clients = 5\n'

junk = st.one_of(
    st.booleans(), st.text(max_size=6), st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True), st.binary(max_size=8),
    st.lists(st.integers(-3, 300), max_size=4), st.lists(st.floats(), max_size=3),
)
"""Values a flwr ConfigRecord holds, of every type, none of them right."""
huge_text = st.sampled_from(["1" * 5000, "[" * 5000 + "]" * 5000, "NaN", "-Infinity", "1e999", "{", "", "null"])


@contextlib.contextmanager
def server_identity():
    """The task identity a ServerApp process has (flwr's Message needs it)."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    try:
        yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def _state(kind: str) -> dict[str, torch.Tensor]:
    state = {k: (v + 0.1 if v.is_floating_point() else v.clone()) for k, v in GLOBAL.items()}
    if kind == "nan":
        state["w"][0, 0] = math.nan
    elif kind == "shape":
        state["b"] = torch.zeros(4)
    return state


def _fields(cid: int) -> dict:
    return update_fields(ClientUpdate(
        client_id=cid, tier="t", state={}, num_examples=8, local_steps=2, forward_cap=0, residual=None,
        holdout_loss=None, metrics={"work_units": 1.0, "train_loss": 0.5},
    ))


KINDS = ["good", "good", "liar", "error", "silent", "bad-state", "no-record", "wrong-types", "bad-json", "junk-fields"]
"""What a node answers: `good` and `liar` (a sound update claiming another client id) are
usable; every other kind must be rejected."""


@st.composite
def reply_to(draw, message: Message, kind: str) -> Message | None:
    cid = message.metadata.dst_node_id - 7000
    if kind == "silent":
        return None
    if kind == "error":
        return Message(Error(draw(st.integers(0, 10**6)), draw(st.none() | st.text(max_size=400))), reply_to=message)
    payload = encode_state(_state("ok"), "float32")
    fields = _fields(cid)
    if kind == "liar":
        fields["client_id"] = draw(st.integers(-5, 10**6).filter(lambda c: c != cid))
    elif kind == "bad-state":
        payload = encode_state(_state(draw(st.sampled_from(["nan", "shape"]))), "float32")
    elif kind == "junk-fields":
        names = ["client_id", "metrics", "tier", "num_examples", "local_steps", "residual", "forward_cap", "coverage"]
        for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=3)):
            fields[name] = draw(st.one_of(
                st.none(), st.text(max_size=4), st.sampled_from([10**400, -(10**400), 2**64, -1, True, 1e308]),
                st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not math.isfinite(x)),
            ))
        fields["num_examples"] = draw(st.sampled_from([-1, 10**400, math.nan, "8", None]))  # one surely out of bounds
    record: dict = {"payload": payload, "update": json.dumps(fields)}
    if kind == "no-record":
        other = draw(st.sampled_from(["updates", "task", "", "node"]))
        return Message(RecordDict({other: ConfigRecord(record)} if draw(st.booleans()) else {}), reply_to=message)
    if kind == "wrong-types":
        for key in draw(st.lists(st.sampled_from(["payload", "update"]), min_size=1, max_size=2, unique=True)):
            if draw(st.booleans()):
                del record[key]
            else:
                record[key] = draw(junk.filter(lambda v, key=key: not isinstance(v, bytes if key == "payload" else str)))
    if kind == "bad-json":
        record["update"] = draw(huge_text | st.text(max_size=20).filter(lambda t: not _is_json_dict(t)))
    content = RecordDict({P.UPDATE_KEY: ConfigRecord(record)})
    if draw(st.booleans()):  # extra records of any kind beside it are ignored
        content["extra"] = MetricRecord({"x": draw(st.floats(allow_nan=False, allow_infinity=False))})
        content["arrays"] = ArrayRecord(torch_state_dict={"w": torch.ones(2)})
    return Message(content, reply_to=message)


def _is_json_dict(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


class ScriptedGrid:
    """A SuperLink's Grid whose nodes answer what hypothesis draws: every node says which
    client it hosts; a train message gets the reply of its client's kind; a node the run
    does not know replies too."""

    def __init__(self, data, kinds: dict[int, str]):
        self.data, self.kinds = data, kinds
        self.replies: dict[str, Message | None] = {}  # by the id of the message replied to
        self.stray: list[str] = []
        self.sent: list[Message] = []

    def get_node_ids(self):
        return [*NODE.values(), STRANGER]

    def push_messages(self, messages):
        """Each message gets an id and, drawn now (not at pull time, which depends on
        timing), its reply; a train batch may also draw a stray reply from a node outside
        the run, to a message it was never sent."""
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = mid = uuid.uuid4().hex
            assert msg.metadata.ttl > 0 and msg.metadata.reply_to_message_id == ""
            self.sent.append(msg)
            ids.append(mid)
            node = msg.metadata.dst_node_id
            if msg.metadata.message_type == MessageType.QUERY:
                cid = {n: c for c, n in NODE.items()}.get(node)
                record = ConfigRecord({P.TIER: "t"} if cid is None else {P.PARTITION_ID: cid, P.NUM_PARTITIONS: N})
                self.replies[mid] = Message(RecordDict({P.NODE_KEY: record}), reply_to=msg)
            else:
                self.replies[mid] = self.data.draw(reply_to(msg, self.kinds[node - 7000]))
        if any(m.metadata.message_type == MessageType.TRAIN for m in messages) and self.data.draw(st.booleans()):
            stray = Message(RecordDict(), dst_node_id=STRANGER, message_type=MessageType.TRAIN, group_id="1", ttl=60)
            stray.metadata.__dict__["_message_id"] = mid = uuid.uuid4().hex
            self.replies[mid] = Message(RecordDict({P.UPDATE_KEY: ConfigRecord({"payload": b"", "update": "{}"})}),
                                        reply_to=stray)
            self.stray.append(mid)
        return ids

    def pull_messages(self, ids):
        wanted = [*ids, *self.stray]
        self.stray = []
        return [r for r in (self.replies.pop(mid, None) for mid in wanted) if r is not None]


fusions = st.builds(
    FusionConfig, weighting=st.sampled_from(["uniform", "examples", "quality"]),
    aggregator=st.sampled_from(["mean", "median", "trimmed-mean", "krum", "multi-krum", "fednova"]),
    min_updates=st.integers(1, 3),
)


@SETTINGS
@given(st.data(), st.lists(st.sampled_from(KINDS), min_size=N, max_size=N), fusions)
def test_any_flower_reply_is_accepted_or_rejected_with_a_reason(data, kinds, fusion_config):
    with server_identity():
        grid = ScriptedGrid(data, dict(enumerate(kinds)))
        engine = GridEngine(grid, DeqflStrategy(CONFIG_TEXT, message_ttl=60.0), N, round_timeout=0.01)
        outcome = run_round(1, dict(GLOBAL), CLIENTS, TIERS, ROUND, engine, Fusion(fusion_config))

    trains = [m for m in grid.sent if m.metadata.message_type == MessageType.TRAIN]
    assert [m.metadata.dst_node_id for m in trains] == [NODE[c] for c in range(N)]  # one per client, in order
    record = outcome.record.to_json()
    accepted = {c["id"] for c in record["clients"]}
    rejected = {r["client"]: r["reason"] for r in record["rejected"]}
    usable = {c for c, k in enumerate(kinds) if k in ("good", "liar")}
    assert set(rejected) == set(range(N)) - usable
    assert accepted == (set() if record["skipped"] else usable)
    assert all(isinstance(reason, str) and 0 < len(reason) <= MAX_TEXT for reason in rejected.values())
    for cid, kind in enumerate(kinds):
        if kind == "silent":
            assert "no reply" in rejected[cid]
        elif kind in ("error", "no-record", "wrong-types", "bad-json"):
            assert f"node {NODE[cid]}: " in rejected[cid]
    for key, value in GLOBAL.items():  # a model, finite, of the global model's shapes and dtypes
        assert outcome.state[key].shape == value.shape and outcome.state[key].dtype == value.dtype
        assert torch.isfinite(outcome.state[key].double()).all()
    if len(usable) >= fusion_config.min_updates:
        assert not record["skipped"] and not torch.equal(outcome.state["w"], GLOBAL["w"])
    else:
        assert record["skipped"] and torch.equal(outcome.state["w"], GLOBAL["w"])


@SETTINGS
@given(st.dictionaries(st.sampled_from(["payload", "update", "x"]), junk | huge_text, max_size=3))
def test_reading_an_update_record_raises_only_a_clear_value_error(values):
    try:
        fields, payload = P.update_from_record(RecordDict({P.UPDATE_KEY: ConfigRecord(values)}))
    except ValueError as exc:
        assert "'payload'" in str(exc) or "'update'" in str(exc)
        return
    assert isinstance(payload, bytes) and isinstance(values["update"], str) and isinstance(fields, dict)


def test_an_integer_payload_is_refused_not_allocated():
    """`bytes(10**12)` would allocate a terabyte: the reader refuses a non-bytes payload."""
    with pytest.raises(ValueError, match="'payload' must be bytes, got int"):
        P.update_from_record(RecordDict({P.UPDATE_KEY: ConfigRecord({"payload": 10**12, "update": "{}"})}))


class FixedGrid:
    """A Grid whose nodes answer every train message with a sound update and, beside it,
    the `client-state` value `states[cid]` gives (absent: none)."""

    def __init__(self, states: dict[int, object]):
        self.states, self.replies, self.sent = states, {}, []

    def get_node_ids(self):
        return list(NODE.values())

    def push_messages(self, messages):
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = mid = uuid.uuid4().hex
            self.sent.append(msg)
            ids.append(mid)
            cid = msg.metadata.dst_node_id - 7000
            if msg.metadata.message_type == MessageType.QUERY:
                record = RecordDict({P.NODE_KEY: ConfigRecord({P.PARTITION_ID: cid, P.NUM_PARTITIONS: N})})
            else:
                update = {"payload": encode_state(_state("ok"), "float32"), "update": json.dumps(_fields(cid))}
                if cid in self.states:
                    update[P.CLIENT_STATE] = self.states[cid]
                record = RecordDict({P.UPDATE_KEY: ConfigRecord(update)})
            self.replies[mid] = Message(record, reply_to=msg)
        return ids

    def pull_messages(self, ids):
        return [r for r in (self.replies.pop(mid, None) for mid in ids) if r is not None]


@pytest.mark.parametrize("state_on_server", [True, False])
def test_a_replys_client_state_reaches_the_store_only_in_simulation_and_only_when_sound(tmp_path, state_on_server):
    """Under `state_on_server` (the simulation) a sound client state is kept and travels
    with the client's next task; a malformed one (NaN values, an integer, a list, bytes
    past the bound) rejects that reply with the reason. On a deployment a node's state is
    never read: the store stays empty and no task carries state."""
    from deqfl.fl.client_state import ClientStateStore  # noqa: PLC0415
    from deqfl.fl.transport import pack_tensors  # noqa: PLC0415

    sound = {"personal/h": torch.arange(4.0)}
    states = {0: pack_tensors(sound), 1: pack_tensors({"personal/h": torch.tensor([math.nan])}), 2: 10**12,
              3: [b"x"], 4: b"\0" * (10 * 2**20)}
    store = ClientStateStore(tmp_path / "client_state")
    with server_identity():
        grid = FixedGrid(states)
        engine = GridEngine(grid, DeqflStrategy(CONFIG_TEXT, message_ttl=60.0, state_on_server=state_on_server), N,
                            round_timeout=1.0)
        first = run_round(1, dict(GLOBAL), CLIENTS, TIERS, ROUND, engine, Fusion(FusionConfig()), store).record.to_json()
        run_round(2, dict(GLOBAL), CLIENTS, TIERS, ROUND, engine, Fusion(FusionConfig()), store)
    tasks = [m.content.config_records[P.TASK_KEY] for m in grid.sent if m.metadata.message_type == MessageType.TRAIN]
    if not state_on_server:
        assert store.clients() == [] and not first["rejected"]
        assert not any(P.CLIENT_STATE in t or P.STATE_ON_SERVER in t for t in tasks)
        return
    assert store.clients() == [0] and torch.equal(store.get(0)["personal/h"], sound["personal/h"])
    rejected = {r["client"]: r["reason"] for r in first["rejected"]}
    assert sorted(rejected) == [1, 2, 3, 4] and all("malformed client state" in r for r in rejected.values())
    second = {json.loads(t["task"])["round"]: t for t in tasks if t["client-id"] == 0}[2]
    assert second[P.STATE_ON_SERVER] is True and second[P.CLIENT_STATE] == pack_tensors(sound)
