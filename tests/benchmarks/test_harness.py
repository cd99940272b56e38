"""The benchmark harness itself: every figure carries its goal, its verdict and what kind of baseline it has."""
import json

import pytest

from tests.benchmarks import conftest as harness
from tests.benchmarks.conftest import Goal, NoGoal, record


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    monkeypatch.setattr(harness, "_recorded", [])
    monkeypatch.setattr(harness, "RESULTS", tmp_path / "results.json")
    return harness


def test_each_figure_is_judged_against_its_goal(recorded, capsys):
    met = record("x.fast", 1.0, "s", 4.0, "floor", goal=Goal("ratio", "<=", 0.5))
    missed = record("x.slow", 3.0, "s", 4.0, "floor", goal=Goal("ratio", "<=", 0.5, "twice the floor at most"))
    scaled = record("x.scaling", 5.0, "s", 9.0, "1 process, same run", speedup=1.8,
                    goal=Goal("speedup", ">=", 1.7))
    context = record("x.context", 2.0, "ms", 1.0, "probe", goal=NoGoal("explains another figure"))

    assert (met["met"], missed["met"], scaled["met"], context["met"]) == (True, False, True, None)
    assert met["goal"] == "ratio <= 0.5" and met["goal_check"] == {"of": "ratio", "op": "<=", "target": 0.5}
    assert context["goal_check"] is None and context["goal"].startswith("none, context figure")
    printed = capsys.readouterr().out
    assert "x.fast: 1.0 s (baseline, measured: floor: 4.0; ratio 0.25); goal: ratio <= 0.5, met: yes" in printed
    assert "goal: ratio <= 0.5 (twice the floor at most), met: no" in printed
    assert "goal: speedup >= 1.7, got speedup 1.8, met: yes" in printed
    assert "goal: none, context figure: explains another figure, met: n/a" in printed


def test_an_extrapolated_baseline_says_so(recorded, capsys):
    entry = record("x.per_row", 1.0, "s", 800.0, "per-row, 10 k sample extrapolated", baseline_kind="extrapolated",
                   goal=Goal("ratio", "<=", 0.01))
    assert entry["baseline_kind"] == "extrapolated"
    assert "(baseline, extrapolated: per-row" in capsys.readouterr().out
    with pytest.raises(ValueError):
        record("x.bad", 1.0, "s", 2.0, "guess", baseline_kind="guessed", goal=Goal("ratio", "<=", 1))


def test_a_figure_without_a_goal_is_refused(recorded):
    with pytest.raises(TypeError):
        record("x.nogoal", 1.0, "s", 2.0, "floor")
    with pytest.raises(ValueError):
        Goal("ratio", "=<", 1)


def test_results_json_keeps_the_old_keys_and_adds_the_verdict(recorded):
    recorded.RESULTS.write_text(json.dumps([{"name": "x.older", "value": 1}, {"name": "x.fast", "value": 9}]))
    record("x.fast", 1.0, "s", 4.0, "floor", goal=Goal("ratio", "<=", 0.5))
    recorded.pytest_sessionfinish(None, 0)
    saved = {entry["name"]: entry for entry in json.loads(recorded.RESULTS.read_text())}
    assert saved["x.older"] == {"name": "x.older", "value": 1}           # other figures are kept
    fast = saved["x.fast"]
    assert {k: fast[k] for k in ("value", "unit", "baseline", "ratio")} == {
        "value": 1.0, "unit": "s", "baseline": 4.0, "ratio": 0.25}
    assert (fast["goal"], fast["met"], fast["baseline_kind"]) == ("ratio <= 0.5", True, "measured")
