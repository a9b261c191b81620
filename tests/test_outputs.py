"""Stage outputs are checked, not assumed (a deleted or cut file re-runs the stage), and a full
disk is one line naming the run directory, not a traceback."""

from __future__ import annotations

import dataclasses
import errno
import shutil
import sqlite3

import conftest
import pytest
from conftest import make_tiny_project

from rlaif.cli import main
from rlaif.outputs import disk_full, intact, manifest

FULL = {
    "ENOSPC": lambda: OSError(errno.ENOSPC, "No space left on device"),
    "sqlite": lambda: sqlite3.OperationalError("database or disk is full"),
    "safetensors": lambda: RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                        'message: "No space left on device" })'),
}


@pytest.mark.parametrize("kind", list(FULL), ids=list(FULL))
def test_disk_full_is_one_line_naming_the_run_dir(kind, tiny_project, monkeypatch, capsys):
    from rlaif import stages

    def boom(run):
        raise FULL[kind]()

    monkeypatch.setitem(stages._BY_NAME, "sft", dataclasses.replace(stages.get("sft"), run=boom))
    assert main(["sft", str(tiny_project / "pipeline.yaml")]) == 1
    out = capsys.readouterr().err
    err = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "disk full" in err[0] and str(tiny_project / "run") in err[0], out
    assert "Traceback" not in out


@pytest.mark.parametrize("exc", [ValueError("bad value"), OSError(errno.EACCES, "Permission denied")],
                         ids=["value-error", "eacces"])
def test_other_errors_are_not_called_disk_full(exc):
    assert not disk_full(exc)


def test_manifest_and_intact(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "a.bin").write_bytes(b"x" * 10)
    (out / "sub").mkdir()
    (out / "sub" / "b.json").write_text("{}")
    files = manifest(out)
    assert files == {"a.bin": 10, "sub/b.json": 2}
    assert intact(out, files)
    (out / "a.bin").write_bytes(b"x" * 5)  # cut
    assert not intact(out, files)
    (out / "a.bin").write_bytes(b"x" * 10)
    (out / "sub" / "b.json").unlink()  # deleted
    assert not intact(out, files)
    assert intact(out, None)  # recorded before this check existed: the marker decides


@pytest.fixture(scope="module")
def mixed_project(tmp_path_factory):
    with conftest.scripted_backend_registered():
        proj = make_tiny_project(tmp_path_factory.mktemp("outputs") / "proj")
        for s in ("sft", "generate", "judge", "mix"):
            assert main([s, str(proj / "pipeline.yaml")]) == 0
        yield proj


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["model.safetensors", "config.json", "tokenizer.json"])
def test_deleted_output_file_reruns_the_stage(victim, mixed_project, tmp_path, capsys):
    proj = tmp_path / "proj"
    shutil.copytree(mixed_project, proj)
    cfg = str(proj / "pipeline.yaml")
    with conftest.scripted_backend_registered():
        assert main(["train-rm", cfg]) == 0
        (proj / "run/reward_model" / victim).unlink()
        capsys.readouterr()

        def printed() -> str:
            r = capsys.readouterr()
            return r.out + r.err

        assert main(["train-rm", cfg]) == 0
        assert "skip train-rm" not in printed()
        assert (proj / "run/reward_model" / victim).exists()
        assert main(["train-rm", cfg]) == 0
        assert "skip train-rm" in printed()
