"""judge.weights: fitted: the logistic fit recovers known weights; the judge stage fits on the human training
pairs only and records the weights and the held-out comparison."""

from __future__ import annotations

import json
import math
import random

import pytest

from rlaif.cli import main
from rlaif.fit_weights import LENGTH, Evidence, fit


@pytest.mark.parametrize("with_length", [False, True], ids=["principles", "principles+length"])
def test_fit_recovers_known_weights(with_length):
    rng = random.Random(0)
    true = {"harm": 2.0, "help": -1.0, "style": 0.5}
    w_len = 0.8 if with_length else 0.0
    ev, ys = [], []
    for _ in range(20000):
        x = {k: rng.gauss(0, 1) for k in true}
        x["missing"] = None  # a principle that never applies: contributes nothing
        n = rng.gauss(0, 1)
        z = sum(true[k] * x[k] for k in true) + w_len * n + 0.3  # 0.3: a first-position bias
        ev.append(Evidence(x, None, n))
        ys.append(rng.random() < 1 / (1 + math.exp(-z)))
    fw = fit(ev, ys, [*true, "missing"], l2=1.0, length_features=with_length)
    for k, w in true.items():
        assert fw.weights[k] == pytest.approx(w, abs=0.1), k
    assert fw.weights["missing"] == 0.0 and fw.intercept == pytest.approx(0.3, abs=0.1)
    assert (fw.length == pytest.approx(w_len, abs=0.1)) if with_length else fw.length is None
    assert LENGTH not in fw.weights and fw.n_train == 20000


def test_fit_needs_both_orientations():
    from rlaif.errors import RlaifError

    with pytest.raises(RlaifError, match="both the first and the second"):
        fit([Evidence({"a": 1.0}, None, 0.0)] * 3, [True] * 3, ["a"])


def test_default_weights_keep_the_judge_hash():
    from rlaif.config import JudgeConfig

    d = JudgeConfig(constitution="c.yaml")
    assert "weights" not in d.call_hash() and "fit" not in d.call_hash()
    f = JudgeConfig(constitution="c.yaml", weights="fitted")
    assert f.call_hash()["weights"] == "fitted"


@pytest.mark.slow
def test_judge_stage_fits_on_training_pairs_only(tiny_project, monkeypatch, capsys):
    """The fit sees exactly the mix's human training pairs, never a held-out one; the weights and the
    held-out comparison are recorded in the stage info, the manifest and used for the AI pairs."""
    import rlaif.fit_weights as fwm
    from rlaif.config import load_config
    from rlaif.mixing import human_split
    from rlaif.pipeline import open_run

    seen: list[list[str]] = []
    real = fwm.gather_evidence

    def spy(judge, constitution, rows, jcfg, category=None, seed=0):
        seen.append([r["uid"] for r in rows])
        return real(judge, constitution, rows, jcfg, category, seed)

    monkeypatch.setattr(fwm, "gather_evidence", spy)
    cfg = str(tiny_project / "pipeline.yaml")
    sets = ["--set", "judge.weights=fitted", "--set", "judge.fit.min_labels=4", "--set", "judge.fit.length_features=true"]
    for stage in ("sft", "generate", "judge"):
        assert main([stage, cfg, *sets]) == 0
    run = open_run(load_config(cfg, [s for s in sets if s != "--set"]))
    try:
        train, held = human_split(run.all_human_labels(), run.all_feedback(), run.cfg.mix, run.cfg.seed)
        info = run.store.stage("judge")["info"]
    finally:
        run.store.close()
        run.lock.release()
    assert train and held
    assert sorted(seen[0]) == sorted(h.key for h in train)  # the fit: training pairs only
    assert not set(seen[0]) & {h.key for h in held}
    assert sorted(seen[1]) == sorted(h.key for h in held)  # the held-out comparison, after the fit
    fw = info["fitted_weights"]
    assert fw["n_train"] == len(train) and fw["held_out"]["n"] == len(held) and fw["length"] is not None
    assert set(fw["weights"]) == {"refuse-harm", "helpful", "concise"}
    manifest = json.loads((tiny_project / "run" / "manifest.json").read_text())
    assert manifest["judge"]["fitted_weights"]["weights"] == fw["weights"]
    # The agreement gate measures the same weighting on the same held-out pairs as the judge stage did.
    from rlaif.gate import held_out_agreement

    run = open_run(load_config(cfg, [s for s in sets if s != "--set"]))
    try:
        gate = held_out_agreement(run)
    finally:
        run.store.close()
        run.lock.release()
    assert gate["weights"] == "fitted" and gate["n"] == fw["held_out"]["fitted"]["n"]
    assert gate["accuracy"] == fw["held_out"]["fitted"]["accuracy"]
    # Without the fit the judge stage's input hash differs (the weights change the AI pairs' ranking).
    assert main(["judge", cfg]) == 0
    assert "skip judge" not in capsys.readouterr().err


def test_fitted_weights_rank_pointwise_items_and_pairwise_comparisons():
    """The judge stage's two uses: a pointwise total (scored principles only, plus length) and a pairwise P(A)."""
    from rlaif.fit_weights import FittedWeights, words_feature
    from rlaif.judges.base import Verdict
    from rlaif.judges.core import Comparison, Item
    from rlaif.judges.llm import PairVerdict
    from rlaif.judges.ranking import sigmoid

    fw = FittedWeights({"a": 2.0, "b": -1.0, "c": 5.0}, intercept=0.7, length=0.5)
    it = Item("q", None, "one two three", {"a": Verdict(0.3), "b": Verdict(0.1), "c": Verdict.unscored("x")})
    assert fw.item_total(it) == pytest.approx(2 * 0.3 - 0.1 + 0.5 * math.log1p(3))
    assert fw.item_total(Item("q", None, "r", {"c": Verdict.unscored("x")})) is None
    comp = Comparison("q", None, "short", "a much longer answer here", [],
                      {"a": PairVerdict(0.9, "scored"), "b": PairVerdict(0.2, "scored"), "c": PairVerdict(None, "unscored")})
    z = 2 * 0.4 - 1 * (-0.3) + 0.5 * (words_feature("short") - words_feature("a much longer answer here"))
    assert fw.comparison_p_first(comp) == pytest.approx(sigmoid(z))  # no first-position intercept
    assert fw.comparison_p_first(Comparison("q", None, "x", "y", [], {"c": PairVerdict(None, "unscored")})) is None


def test_report_section_shows_both_weightings():
    from rlaif.report import fitted_lines

    fw = {"weights": {"a": 1.5}, "intercept": 0.1, "length": None, "n_train": 40, "l2": 1.0,
          "held_out": {"n": 12, "constitution": {"accuracy": 0.5, "ci95": (0.25, 0.75), "n": 12},
                       "fitted": {"accuracy": 0.75, "ci95": (0.47, 0.91), "n": 12},
                       "per_principle": {"a": {"agreement": 0.7, "constitution_weight": 2.0, "fitted_weight": 1.5}}}}
    text = "\n".join(fitted_lines(fw))
    assert "40 human training pairs" in text and "constitution weights: 0.500" in text
    assert "fitted weights: 0.750 (95% CI 0.470–0.910)" in text and "| a | 0.700 | 2.000 | 1.500 |" in text


def test_report_marks_held_out_figures_measured_on_an_older_split(tiny_project):
    """The held-out pairs are not in the judge stage's input (they do not change its labels), so a held-out label
    changed after the stage leaves its recorded held-out figures stale: the report says so."""
    from rlaif.config import load_config
    from rlaif.fit_weights import held_out_is_stale
    from rlaif.mixing import human_split
    from rlaif.pipeline import open_run
    from rlaif.records import HumanLabel
    from rlaif.report import fitted_lines

    cfg = str(tiny_project / "pipeline.yaml")
    sets = ["--set", "judge.weights=fitted", "--set", "judge.fit.min_labels=4"]
    for stage in ("sft", "generate", "judge"):
        assert main([stage, cfg, *sets]) == 0
    overrides = [s for s in sets if s != "--set"]
    run = open_run(load_config(cfg, overrides))
    try:
        fw = run.store.stage("judge")["info"]["fitted_weights"]
        assert not held_out_is_stale(run, fw)
        _, held = human_split(run.all_human_labels(), run.all_feedback(), run.cfg.mix, run.cfg.seed)
        h = held[0]  # a person changes their mind on a held-out comparison
        run.store.add_human_labels([HumanLabel(h.prompt, h.rejected, h.chosen, source="viewer:alice")])
    finally:
        run.store.close()
        run.lock.release()
    assert main(["judge", cfg, *sets]) == 0  # skipped: the training pairs did not change
    run = open_run(load_config(cfg, overrides))
    try:
        assert run.store.stage("judge")["info"]["fitted_weights"] == fw
        assert held_out_is_stale(run, fw)
    finally:
        run.store.close()
        run.lock.release()
    assert any("have changed since" in line for line in fitted_lines(fw | {"held_out_stale": True}))
    assert not any("have changed since" in line for line in fitted_lines(fw | {"held_out_stale": False}))
    # No held-out pair when the stage ran, some now: the note does not speak of figures that are not there.
    lines = fitted_lines(fw | {"held_out": {}, "held_out_stale": True})
    assert any("had no held-out human pairs" in line for line in lines)
    assert not any("figures below" in line for line in lines)


@pytest.mark.slow
def test_report_judge_human_agreement_with_fitted_weights_is_measured_on_held_out_pairs_only(tiny_project):
    """With ``judge.weights: fitted`` the weights are fitted to the human training pairs: the report's
    ``judge.human_agreement`` counted them too (the AI labels on them were made with weights fitted to them, and
    the other labels were voted with the constitution's weights, not the fitted ones)."""
    from rlaif.config import load_config
    from rlaif.pipeline import open_run
    from rlaif.report import _judge_human_agreement

    cfg = str(tiny_project / "pipeline.yaml")
    sets = ["--set", "judge.weights=fitted", "--set", "judge.fit.min_labels=4"]
    for stage in ("sft", "generate", "judge"):
        assert main([stage, cfg, *sets]) == 0
    run = open_run(load_config(cfg, [s for s in sets if s != "--set"]))
    try:
        fw = run.store.stage("judge")["info"]["fitted_weights"]
        got = _judge_human_agreement(run)
    finally:
        run.store.close()
        run.lock.release()
    assert 0 < fw["held_out"]["n"] < fw["held_out"]["n"] + fw["n_train"]
    assert got["n"] == fw["held_out"]["fitted"]["n"] and got["accuracy"] == fw["held_out"]["fitted"]["accuracy"]
