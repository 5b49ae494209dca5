"""The round record: its generated doc is current, and what a run writes is that schema."""

from pathlib import Path

from deqfl.fl.record import RoundRecord, render

ROOT = Path(__file__).resolve().parents[2]


def test_round_record_doc_is_up_to_date():
    assert (ROOT / "docs" / "ROUND_RECORD.md").read_text() == render()


def test_a_written_round_parses_back_as_a_round_record(tmp_path):
    from deqfl.experiments.config import load_config  # noqa: PLC0415
    from deqfl.experiments.results import read_jsonl  # noqa: PLC0415
    from deqfl.experiments.runner import run_experiment  # noqa: PLC0415

    config = load_config(None, [
        "data.dataset=digits", "data.num_clients=4", "experiment.rounds=2", "sampling.fraction=1.0",
        "evaluation.anytime_every=2", "evaluation.anytime_budgets=[1, 4]", "experiment.rounds=3",
        f"data.cache_dir='{tmp_path / 'cache'}'",
    ])
    run_experiment(config, tmp_path / "run")
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    records = [RoundRecord.model_validate(row) for row in rows]  # extra keys would fail
    assert [r.round for r in records] == [1, 2, 3]
    assert records[1].anytime is not None and "anytime" not in rows[0]
    assert all(r.accuracy is not None and r.wall_seconds is not None for r in records)
    assert set(rows[0]) == set(RoundRecord.model_fields) - {"anytime", "personal_accuracy", "unseen_accuracy"}
