"""The agreement gate (mix.min_judge_agreement): blocks training on a judge that disagrees with the held-out
human labels, --force passes and is recorded."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from rlaif.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mixed_project(tmp_path_factory):
    """A tiny project whose stages up to mix ran (scripted judge)."""
    import conftest

    with conftest.scripted_backend_registered():
        proj = conftest.make_tiny_project(tmp_path_factory.mktemp("gate") / "proj")
        for stage in ("sft", "generate", "judge", "mix"):
            assert main([stage, str(proj / "pipeline.yaml")]) == 0
        yield proj


def _copy(src, tmp_path, reverse_labels: bool = False):
    proj = tmp_path / "proj"
    shutil.copytree(src, proj)
    if reverse_labels:  # people now prefer what the judge rejects
        rows = [json.loads(line) for line in (proj / "labels.jsonl").read_text().splitlines()]
        (proj / "labels.jsonl").write_text("".join(json.dumps(r | {"chosen": r["rejected"], "rejected": r["chosen"]})
                                                   + "\n" for r in rows))
    return proj


def _agreement(proj, threshold=None):
    from rlaif.config import load_config
    from rlaif.gate import held_out_agreement
    from rlaif.pipeline import open_run

    sets = [f"mix.min_judge_agreement={threshold}"] if threshold is not None else []
    run = open_run(load_config(proj / "pipeline.yaml", sets))
    try:
        return run, held_out_agreement(run)
    finally:
        run.store.close()
        run.lock.release()


def test_agreement_is_measured_on_the_held_out_split_only(mixed_project, tmp_path, scripted_backend):
    from rlaif.store import Store

    _, a = _agreement(mixed_project)
    with Store(mixed_project / "run" / "store.sqlite", readonly=True) as s:
        mix = s.stage("mix")["info"]
    assert mix["eval_source"] == "human" and a["n"] == mix["eval_pairs"] > 0
    lo, hi = a["ci95"]
    assert lo <= a["accuracy"] <= hi
    _, rev = _agreement(_copy(mixed_project, tmp_path, reverse_labels=True))
    assert rev["n"] == a["n"] and rev["accuracy"] < a["accuracy"]  # it measures the labels, not a constant


def test_gate_blocks_then_force_trains_and_is_recorded(mixed_project, tmp_path, capsys, scripted_backend):
    proj = _copy(mixed_project, tmp_path, reverse_labels=True)
    assert main(["mix", str(proj / "pipeline.yaml")]) == 0
    capsys.readouterr()
    args = ["train-rm", str(proj / "pipeline.yaml"), "--set", "mix.min_judge_agreement=0.9"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "agreement gate" in err and "below mix.min_judge_agreement=0.9" in err and "rlaif view" in err
    assert "--principle" in err and "`rlaif train-rm CONFIG --force`" in err
    assert not (proj / "run" / "reward_model").exists()
    from rlaif.store import Store

    with Store(proj / "run" / "store.sqlite", readonly=True) as s:
        assert s.stage("train-rm") is None  # nothing started
        assert s.stage("mix")["status"] == "done"  # the gate does not change the mix's input hash

    assert main(args + ["--force"]) == 0
    with Store(proj / "run" / "store.sqlite", readonly=True) as s:
        gate = s.stage("train-rm")["info"]["agreement_gate"]
    assert gate["forced"] and not gate["passed"] and gate["threshold"] == 0.9 and gate["worst_principles"]
    assert (proj / "run" / "reward_model" / "config.json").exists()
    assert "overridden by --force" in capsys.readouterr().err


def test_gate_passes_at_its_threshold_and_blocks_just_above(mixed_project, tmp_path, scripted_backend):
    from rlaif.config import load_config
    from rlaif.errors import RlaifError
    from rlaif.gate import check_gate
    from rlaif.pipeline import open_run

    cases = []
    for reverse in (False, True):
        proj = _copy(mixed_project, tmp_path / str(reverse), reverse_labels=reverse)
        acc = _agreement(proj)[1]["accuracy"]
        cases += ([(proj, acc, True)] if acc > 0 else []) + ([(proj, acc + 0.01, False)] if acc < 0.99 else [])
    assert any(not passes for _, _, passes in cases) and any(passes for _, _, passes in cases)
    for proj, threshold, passes in cases:
        run = open_run(load_config(proj / "pipeline.yaml", [f"mix.min_judge_agreement={threshold}"]))
        try:
            if passes:
                rec = check_gate(run, "train-policy", force=False)
                assert rec["passed"] and not rec["forced"] and rec["accuracy"] == threshold
            else:
                with pytest.raises(RlaifError, match="train-policy stopped by the agreement gate"):
                    check_gate(run, "train-policy", force=False)
        finally:
            run.store.close()
            run.lock.release()


def test_with_fitted_weights_the_gate_measures_the_fitted_weighting(tiny_project):
    """With judge.weights: fitted the AI labels are ranked with the fitted weights, so the gate measures those
    (it measured the constitution's weights whatever ranked the labels)."""
    from rlaif.config import load_config
    from rlaif.errors import RlaifError
    from rlaif.gate import held_out_agreement
    from rlaif.pipeline import open_run

    cfg = tiny_project / "pipeline.yaml"

    def measured(sets, fitted=None):
        run = open_run(load_config(cfg, sets))
        try:
            if fitted is not None:
                run.results["judge"] = {"fitted_weights": fitted}
            return held_out_agreement(run)
        finally:
            run.store.close()
            run.lock.release()

    const = measured([])
    assert const["weights"] == "constitution" and const["n"] > 0
    assert const["judge_ties"] == const["judge_unscored"] == 0  # so reversed weights give the other votes
    ids = [p["id"] for p in yaml.safe_load((tiny_project / "constitution.yaml").read_text())["principles"]]
    reverse = {"weights": {pid: -1.0 for pid in ids}, "intercept": 0.0, "length": None}
    fit = measured(["judge.weights=fitted"], reverse)
    assert fit["weights"] == "fitted" and fit["n"] == const["n"]
    assert const["accuracy"] != 0.5 and fit["accuracy"] == pytest.approx(1 - const["accuracy"])
    with pytest.raises(RlaifError, match="run `rlaif judge`"):
        measured(["judge.weights=fitted"])
