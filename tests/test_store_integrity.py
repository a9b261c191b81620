"""The run store: damage is found before a run trusts it, and read-only commands never write."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from rlaif.errors import RlaifError
from rlaif.records import Prompt
from rlaif.store import Store


def _store(path, n=400):
    with Store(path) as s:
        s.put_prompts([Prompt(f"p{i}", "some prompt text " * 20, None, "train") for i in range(n)])
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def _damage(path):
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 4 * page
    data[2 * page: 3 * page] = b"\xff" * page  # a table page overwritten
    path.write_bytes(bytes(data))


def test_damaged_store_is_an_error_before_a_run(tmp_path):
    path = tmp_path / "store.sqlite"
    _store(path)
    _damage(path)
    with pytest.raises(RlaifError, match="not a valid run store.*restore it"):
        Store(path, check=True)


def test_intact_store_passes_the_check(tmp_path):
    path = tmp_path / "store.sqlite"
    _store(path)
    with Store(path, check=True) as s:
        assert len(s.prompts("train")) == 400


def test_damaged_store_stops_rlaif_run_with_one_line(tiny_project, capsys):
    from rlaif.cli import main

    cfg = str(tiny_project / "pipeline.yaml")
    assert main(["sft", cfg]) == 0
    path = tiny_project / "run" / "store.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    if path.stat().st_size <= 5 * 4096:  # make the store big enough to have a table page to damage
        with Store(path) as s:
            s.put_prompts([Prompt(f"x{i}", "filler text " * 30, None, "train") for i in range(400)])
        db = sqlite3.connect(path)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
    _damage(path)
    capsys.readouterr()
    assert main(["run", cfg]) == 2
    err = capsys.readouterr().err
    assert "not a valid run store" in err and "Traceback" not in err


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_readonly_open_never_stamps_or_creates(tmp_path):
    path = tmp_path / "store.sqlite"
    _store(path, n=3)
    db = sqlite3.connect(path)
    with db:
        db.execute("DELETE FROM meta")  # an old store without a schema stamp
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    before = _digest(path)
    with Store(path, create=False, readonly=True) as s:
        assert len(s.prompts("train")) == 3
    assert _digest(path) == before
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM meta").fetchone()[0] == 0
    with pytest.raises(RlaifError, match="no run store here"):
        Store(tmp_path / "missing.sqlite", readonly=True)
    assert not (tmp_path / "missing.sqlite").exists()


@pytest.mark.parametrize("msg", ["attempt to write a readonly database", "unable to open database file"],
                         ids=["readonly", "cannot-open"])
def test_unwritable_store_says_so_instead_of_invalid(tmp_path, monkeypatch, msg):
    # (a real read-only folder cannot be made here: the tests run as root, who writes anyway)
    path = tmp_path / "store.sqlite"
    _store(path, n=1)

    def refuse(self, readonly):
        raise sqlite3.OperationalError(msg)

    monkeypatch.setattr(Store, "_connect", refuse)
    with pytest.raises(RlaifError) as e:
        Store(path)
    assert "not a valid run store" not in str(e.value) and "\n" not in str(e.value)
    if "readonly" in msg:
        assert "read-only" in str(e.value) and "rlaif show" in str(e.value)
