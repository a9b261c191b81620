from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from rlaif.cli import main


def _break(project: Path, case: str) -> list[str]:
    """Make one input of the tiny project bad; return extra CLI args."""
    cfg_path = project / "pipeline.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    if case == "missing-config":
        cfg_path.unlink()
    elif case == "malformed-config":
        cfg_path.write_text("name: tiny\ndata: [unclosed\n")
    elif case == "unknown-config-key":
        cfg["judge"]["temprature"] = 0.2
        cfg_path.write_text(yaml.safe_dump(cfg))
    elif case == "bad-constitution":
        (project / "constitution.yaml").write_text("name: c\nprinciples:\n  - id: a\n    text: ''\n")
    elif case == "missing-constitution":
        (project / "constitution.yaml").unlink()
    elif case == "bad-labels":
        with open(project / "labels.jsonl", "a") as f:
            f.write('{"prompt": "q", "chosen": "a"}\n')
    elif case == "bad-feedback":
        with open(project / "labels.jsonl", "a") as f:
            f.write('{"prompt": "q", "completion": "a", "rating": 7, "scale": 5}\n')
    elif case == "missing-labels":
        (project / "labels.jsonl").unlink()
    elif case == "bad-prompts":
        (project / "prompts.jsonl").write_text('{"id": "a"}\n')
    elif case == "bad-sft":
        (project / "sft.jsonl").write_text("not json\n")
    elif case == "bad-override":
        return ["--set", "generate.num_candidates=lots"]
    elif case == "unknown-backend":
        return ["--set", "judge.backend=nonesuch"]
    return []


CASES = {
    "missing-config": "pipeline.yaml: pipeline config not found",
    "malformed-config": "pipeline.yaml:",
    "unknown-config-key": "judge.temprature: unknown key",
    "bad-constitution": "constitution.yaml:4: principles.0.text",
    "missing-constitution": "constitution.yaml: constitution not found",
    "bad-labels": "labels.jsonl:13:",
    "bad-feedback": "labels.jsonl:13: field 'rating' must be an integer from 1 to 5",
    "missing-labels": "labels.jsonl: human labels file not found",
    "bad-prompts": "prompts.jsonl:1:",
    "bad-sft": "sft.jsonl:1: invalid JSON",
    "bad-override": "--set generate.num_candidates",
}


@pytest.mark.parametrize("case", sorted(CASES), ids=str)
@pytest.mark.parametrize("command", ["run", "generate"])
def test_bad_input_exit_2_one_line_nothing_written(case, command, tiny_project, capsys, monkeypatch):
    monkeypatch.chdir(tiny_project)
    extra = _break(tiny_project, case)
    code = main([command, str(tiny_project / "pipeline.yaml"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert CASES[case] in err, err
    assert "Traceback" not in err
    assert not (tiny_project / "run").exists()
    assert not (tiny_project / "runs").exists()


def test_unknown_backend_is_a_user_error(tiny_project, capsys, monkeypatch):
    monkeypatch.chdir(tiny_project)
    code = main(["judge", str(tiny_project / "pipeline.yaml"), "--set", "judge.backend=nonesuch"])
    assert not (tiny_project / "run").exists()
    err = capsys.readouterr().err
    assert code == 2 and "unknown backend 'nonesuch'" in err


def test_stage_without_its_inputs_says_what_to_run(tiny_project, capsys, scripted_backend):
    code = main(["mix", str(tiny_project / "pipeline.yaml")])
    assert code == 2
    assert "has not run" in capsys.readouterr().err


def test_help_and_lint_do_not_import_heavy_libraries():
    code = (
        "import sys; from rlaif.cli import main\n"
        f"rc = main(['constitution', 'lint', {str(ROOT / 'constitutions' / 'helpful_harmless.yaml')!r}])\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules]\n"
        "print(rc, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("0 []"), out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_keyboard_interrupt_exits_130(monkeypatch, tiny_project, capsys):
    import rlaif.pipeline as pipeline

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_pipeline", boom)
    assert main(["run", str(tiny_project / "pipeline.yaml")]) == 130
    assert "resume" in capsys.readouterr().err


def _ab_pairs(tmp_path: Path) -> Path:
    import json

    rows = [{"prompt": f"q{i}", "response_a": "I can't help with that.", "response_b": "Sure, do it.",
             "label": "A"} for i in range(4)]
    p = tmp_path / "pairs.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_eval_judge_json_goes_into_a_new_folder(tmp_path, scripted_backend):
    import json

    out = tmp_path / "figures" / "today" / "r.json"
    assert main(["eval-judge", "--pairs", str(_ab_pairs(tmp_path)), "--constitution",
                 str(ROOT / "constitutions" / "helpful_harmless.yaml"), "--judge.backend=scripted", "--judge.model=s",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["pairs"] == 4 and not list(out.parent.glob("*.tmp"))


@pytest.mark.parametrize("target", ["folder", "device"], ids=["a-folder", "a-device"])
def test_eval_judge_bad_json_target_is_exit_2_before_judging(target, tmp_path, scripted_backend, capsys):
    out = tmp_path if target == "folder" else Path("/dev/null")
    assert main(["eval-judge", "--pairs", str(_ab_pairs(tmp_path)), "--constitution",
                 str(ROOT / "constitutions" / "helpful_harmless.yaml"), "--judge.backend=scripted", "--judge.model=s",
                 "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out) in err and "--json" in err, err
    assert not scripted_backend  # no judge was made


def test_a_run_store_kept_busy_by_another_process_is_one_line_exit_1(monkeypatch, tiny_project, tmp_path, capsys):
    """Another process holds the run store's write lock past the busy timeout: `rlaif run` says so in one line
    (exit 1) instead of a sqlite3 traceback."""
    import sqlite3

    from rlaif.store import Store

    run = tmp_path / "busy-run"
    run.mkdir()
    Store(run / "store.sqlite").close()
    monkeypatch.setattr(Store, "BUSY_TIMEOUT", 0.2)
    other = sqlite3.connect(run / "store.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        assert main(["run", str(tiny_project / "pipeline.yaml"), "--workdir", str(run)]) == 1
    finally:
        other.execute("ROLLBACK")
        other.close()
    err = capsys.readouterr().err
    assert "run store is busy" in err and "0.2 s" in err and "Traceback" not in err and len(err.splitlines()) == 1
