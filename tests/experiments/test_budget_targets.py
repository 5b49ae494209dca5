"""E2B's target lines: seed-paired differences against hand-computed values."""

from deqfl.experiments.reproduce.budget_targets import budget_target_lines, paired


def _run(method, group, seed, final, weak=None, rounds=(0.5, 0.6, 0.7, 0.8, 0.9, 1.0)):
    tiers = {"strong": final} | ({"weak": weak} if weak is not None else {})
    return {"experiment": "E2B", "dataset": "d", "method": method, "group": group, "seed": seed,
            "summary": {"final_accuracy": final, "tier_accuracy": tiers},
            "rounds": [{"round": i + 1, "accuracy": a} for i, a in enumerate(rounds)]}


def test_paired_differences_use_only_the_seeds_both_ran():
    a = {0: _run("x", "mixed", 0, 0.80), 1: _run("x", "mixed", 1, 0.70)}
    b = {1: _run("y", "mixed", 1, 0.65), 2: _run("y", "mixed", 2, 0.10)}
    diffs = paired(a, b, lambda r: r["summary"]["final_accuracy"])
    assert list(diffs) == [1] and abs(diffs[1] - 5.0) < 1e-9


def test_target_lines_judge_within_and_ahead_by_the_spread():
    results = [
        _run("deq-fedavg", "mixed", 0, 0.860, weak=0.850), _run("deq-fedavg", "mixed", 1, 0.820, weak=0.810),
        _run("deq-fedavg", "all-strong", 0, 0.862), _run("deq-fedavg", "all-strong", 1, 0.826),
        _run("deq-drop-weak", "mixed", 0, 0.800), _run("deq-drop-weak", "mixed", 1, 0.790),
        _run("cnn-heterofl", "mixed", 0, 0.880, weak=0.840),  # one seed only: spread unknown
        _run("deq-fedavg", "mixed", 0, 0.1) | {"dataset": "other"},  # another data set: ignored
    ]
    lines = budget_target_lines(results, "E2B", "d")
    assert lines[0] == "Target, deq-fedavg (mixed), seed-paired differences:"
    # -0.2 and -0.6 pt: mean -0.4, within 0.5; the last 5 rounds are equal in every run
    assert lines[1] == ("- against deq-fedavg (all-strong), final accuracy: -0.40 pt (s0 -0.20, s1 -0.60): "
                        "**holds (within 0.5 pt)**; mean of the last 5 rounds +0.00 pt (s0 +0.00, s1 +0.00): "
                        "holds (within 0.5 pt) (2 seeds).")
    # +6 and +3 pt: mean 4.5; stds 2.83 (mixed: 86, 82) and 0.71 (drop-weak: 80, 79); last rounds: no lead
    assert lines[2] == ("- against deq-drop-weak (mixed), final accuracy: +4.50 pt (s0 +6.00, s1 +3.00), spread over "
                        "seeds 2.83 pt: **holds**; mean of the last 5 rounds +0.00 pt (s0 +0.00, s1 +0.00), spread "
                        "over seeds 0.00 pt: does not hold (2 seeds).")
    assert lines[3] == ("- weak tier against cnn-heterofl's weak slice (mixed): +1.00 pt (s0 +1.00): "
                        "**spread over seeds unknown, not judged** (one seed).")
    assert len(lines) == 5  # no deq-quality run: no block for it


def test_no_mixed_run_no_lines():
    assert budget_target_lines([_run("deq-fedavg", "all-strong", 0, 0.8)], "E2B", "d") == []


def test_a_mixed_fleet_more_than_half_a_point_below_does_not_hold():
    results = [_run("deq-fedavg", "mixed", 0, 0.853, weak=0.85), _run("deq-fedavg", "all-strong", 0, 0.860)]
    (line,) = [x for x in budget_target_lines(results, "E2B", "d") if "all-strong" in x]
    assert line == ("- against deq-fedavg (all-strong), final accuracy: -0.70 pt (s0 -0.70): "
                    "**does not hold (more than 0.5 pt below)**; mean of the last 5 rounds +0.00 pt (s0 +0.00): "
                    "holds (within 0.5 pt) (one seed).")
