"""The round record: one line of a run's `metrics.jsonl`, as a typed object.

The fields below are the file's documented schema: docs/ROUND_RECORD.md is generated from
them (`python -m deqfl.fl.record > docs/ROUND_RECORD.md`) and a test keeps it current.
The round pipeline (`deqfl.fl.server.run_round`) fills the training part; the runner adds
the evaluation and timing part before the record is written.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClientRecord(_Record):
    """One accepted client's row (`clients`). Reported numbers are as the client sent them
    after the server's bounds; `weight` and `quality` are the server's."""

    id: int = Field(description="Client id.")
    tier: str = Field(description="The client's device tier (the server's assignment).")
    num_examples: int = Field(description="Training examples reported, bounded by the partition size the server knows.")
    local_steps: int = Field(description="Local steps the server assigned (what fusion uses).")
    forward_cap: int = Field(description="Forward iteration cap the server assigned; 0 for explicit models.")
    iterations: float | None = Field(description="Mean forward iterations per training step (reported).")
    residual: float | None = Field(description="Relative residual of the returned model at the reference budget (reported, bounded); None for explicit models.")
    train_loss: float | None = Field(description="Mean training loss (reported).")
    holdout_loss: float | None = Field(description="Loss on the client's held-back rows (reported).")
    holdout_accuracy: float | None = Field(description="Accuracy on the client's held-back rows (reported).")
    bytes_up: int = Field(description="Length of the client's upload in bytes (measured by the server).")
    simulated_seconds: float = Field(description="The client's simulated round time (`deqfl.fl.clock`).")
    compute_seconds: float | None = Field(description="Measured compute seconds (reported, never acted on).")
    weight: float = Field(0.0, description="The client's effective share in the fused model.")
    quality: float | None = Field(None, description="The quality q_k the weighting used (None where it has none).")


class Rejection(_Record):
    """A client (or a reply without a usable client id) whose update was not fused."""

    client: int | None = Field(description="Client id, or None for a reply naming no usable client.")
    reason: str = Field(description="Why (at most 300 characters of any client-sent text).")


class Adjustment(_Record):
    """A reported number the server replaced: by a bound, or by the value it assigned."""

    client: int = Field(description="Client id.")
    field: str = Field(description="The field, e.g. `local_steps`, `forward_cap`, `num_examples`, `residual`, `update_norm`.")
    reported: Any = Field(description="What the client reported.")
    used: Any = Field(description="What the server used.")


class RoundRecord(_Record):
    """One round: what was sent, who was fused with which weight, and how the model did."""

    round: int = Field(description="Round number, from 1.")
    bytes_down: int = Field(description="Bytes the server sent: each receiving client's download (full or sliced model, with the algorithm's extras such as SCAFFOLD's control variate).")
    bytes_up: int = Field(description="Bytes the server received: the length of every upload that arrived (extras such as SCAFFOLD's increments included).")
    clients: list[ClientRecord] = Field(description="The fused clients, by id.")
    rejected: list[Rejection] = Field(description="Clients whose update was not fused, with the reason (crashes, timeouts, stragglers, malformed or invalid replies, norm outliers).")
    unavailable: list[int] = Field(description="Sampled clients that did not answer the call (their tier's availability).")
    adjusted: list[Adjustment] = Field(description="Reported numbers the server bounded or replaced.")
    skipped: bool = Field(description="True when the global model was left unchanged (too few valid updates, or a non-finite result).")
    simulated_seconds: float = Field(description="The round's simulated time: its slowest fused client (a straggler counts at the deadline).")
    malicious: list[int] = Field(description="Sampled clients that run an attack (simulation).")
    malicious_weight: float = Field(description="The fusion weight the malicious clients won.")
    epsilon: float | None = Field(description="Privacy spent so far (client-level DP), None without DP.")
    lr: float | None = Field(None, description="The clients' learning rate this round (`train.lr` on `train.lr_schedule`, decided by the server and sent in every task); None in records written before it was recorded.")
    accuracy: float | None = Field(None, description="Test accuracy of the global model at the reference budget (on `data.eval_subset` rows if set).")
    loss: float | None = Field(None, description="Test loss at the reference budget.")
    global_residual: float | None = Field(None, description="Mean relative residual of the global model at the reference budget; None for explicit models.")
    tier_accuracy: dict[str, float] = Field(default_factory=dict, description="Test accuracy at each tier's budget (a width-sliced tier: its sub-model).")
    client_accuracy: dict[str, float | None] = Field(default_factory=dict, description="`mean` and `p10` of the fused clients' held-back accuracy.")
    anytime: dict[str, float] | None = Field(None, description="Accuracy at each anytime budget (every `evaluation.anytime_every` rounds; absent otherwise).")
    personal_accuracy: dict[str, Any] | None = Field(None, description="Under `personalization.algorithm`: `mean`, `p10`, `clients` and per-tier means (`tiers`) of the round's clients' personalised accuracy on their own test splits (absent otherwise).")
    unseen_accuracy: dict[str, Any] | None = Field(None, description="Under `personalization.unseen_fraction` > 0, in the last round: the same summary for the clients held out of training, each after fitting its personalised model (absent otherwise).")
    train_seconds: float | None = Field(None, description="Measured seconds of the round's training and fusion.")
    eval_seconds: float | None = Field(None, description="Measured seconds of the round's evaluation.")
    wall_seconds: float | None = Field(None, description="Measured seconds since the run started (resumed runs continue the count).")

    def to_json(self) -> dict[str, Any]:
        """The record as written to `metrics.jsonl` (`anytime`, `personal_accuracy` and
        `unseen_accuracy` only in rounds that have them)."""
        data = self.model_dump(mode="python")
        for key in ("anytime", "personal_accuracy", "unseen_accuracy"):
            if data[key] is None:
                del data[key]
        return data


def render() -> str:
    """docs/ROUND_RECORD.md."""
    lines = [
        "# The round record (`metrics.jsonl`)",
        "",
        "A run directory's `metrics.jsonl` holds one JSON object per round. This page is",
        "generated from the record types in `deqfl/fl/record.py`: `python -m deqfl.fl.record`.",
        "Measured seconds are reported, never acted on; everything else is deterministic by",
        "config and seed.",
        "",
    ]
    for model in (RoundRecord, ClientRecord, Rejection, Adjustment):
        lines += [f"## {model.__name__}", "", " ".join((model.__doc__ or "").split()), ""]
        lines += ["| key | type | meaning |", "|---|---|---|"]
        for name, info in model.model_fields.items():
            kind = re.sub(r"<class '(\w+)'>|typing\.|__main__\.|deqfl\.fl\.record\.", r"\1", str(info.annotation))
            kind = kind.replace("|", "\\|")
            meaning = (info.description or "").replace("|", "\\|")
            lines.append(f"| `{name}` | `{kind}` | {meaning} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
