"""A viewer journal (rlaif/viewer/journal.py) is a file in the run directory that `rlaif view` and `rlaif run`
read back into the store: whatever it holds is checked before any of it goes in. A line that parses as JSON but
is not a write the viewer makes (arguments its write does not take, text that is a number, a label word or a
source no viewer writes), a value nested thousands deep, a FIFO or a directory where a journal belongs: one
line naming the file (and line), exit 2, nothing stored, the file left where it is; never a traceback, a hang
or a row no viewer could have written."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

import pytest
from test_viewer import make_run

from rlaif.errors import RlaifError
from rlaif.layout import RunLayout
from rlaif.viewer.journal import replay
from rlaif.viewer.queue import open_run_store

LABEL = {"$record": "HumanLabel", "prompt": "p", "chosen": "a", "rejected": "b", "label": "chosen",
         "source": "viewer:ann", "annotator": "ann"}


def _entry(op: str, seq: int = 1, **args) -> bytes:
    return (json.dumps({"seq": seq, "op": op, "args": args}) + "\n").encode()


GOOD = _entry("label", label=LABEL, keep_note=True, what="agree")

BAD_LINES = {
    "unknown-argument": _entry("note", key="k", source="viewer:ann", note="x", bogus=1),
    "missing-argument": _entry("note", key="k"),
    "text-is-a-number": _entry("label", label=LABEL | {"prompt": 1}, keep_note=True, what="agree"),
    "flag-is-a-string": _entry("label", label=LABEL, keep_note="yes", what="agree"),
    "unknown-label-word": _entry("label", label=LABEL | {"label": "garbage"}, keep_note=True, what="agree"),
    "not-a-viewer-source": _entry("label", label=LABEL | {"source": "import:x.jsonl:1"}, keep_note=True, what="a"),
    "undo-of-an-imported-label": _entry("undo-label", key="k", source="import:x.jsonl:1", previous=None),
    "unknown-feedback-kind": _entry("feedback", feedback={"$record": "Feedback", "prompt": "p", "completion": "c",
                                                          "kind": "vibes", "value": 1, "scale": 2,
                                                          "source": "viewer:ann"}, keep_comment=True, what="up"),
    "seq-is-a-bool": b'{"seq": true, "op": "note", "args": {"key": "k", "source": "viewer:a", "note": null}}\n',
    "deep-nesting": b'{"seq": 1, "op": "note", "args": {"key": ' + b"[" * 50_000 + b"]" * 50_000 + b"}}\n",
    "lone-surrogate": b'{"seq": 1, "op": "note", "args": {"key": "k", "source": "viewer:a", "note": "\\ud800"}}\n',
    "not-utf8": b'{"seq": 1, "op": "note", "args": {"key": "\xff", "source": "viewer:a", "note": null}}\n',
    "seq-goes-back": _entry("label", seq=10, label=LABEL, keep_note=True, what="agree") + GOOD,
    "time-is-a-string": GOOD.replace(b'"args"', b'"t": "noon", "args"'),
    "time-is-a-bool": GOOD.replace(b'"args"', b'"t": true, "args"'),
    "time-is-not-finite": GOOD.replace(b'"args"', b'"t": Infinity, "args"'),
    "time-is-negative": GOOD.replace(b'"args"', b'"t": -5, "args"'),
}


def _journal(run: Path, data: bytes) -> Path:
    d = RunLayout(run).viewer_journals
    d.mkdir()
    path = d / "00000000000000000001-1-0000aaaa.jsonl"
    path.write_bytes(data)
    return path


def _human_rows(run: Path) -> int:
    db = sqlite3.connect(run / "store.sqlite")
    try:
        return db.execute("SELECT COUNT(*) FROM human_labels").fetchone()[0] + \
            db.execute("SELECT COUNT(*) FROM human_feedback").fetchone()[0]
    finally:
        db.close()


@pytest.mark.parametrize("case", sorted(BAD_LINES), ids=str)
def test_a_journal_line_no_viewer_writes_is_one_line_naming_it_and_nothing_is_stored(tmp_path, case):
    run = make_run(tmp_path / "run")
    path = _journal(run, BAD_LINES[case] + GOOD.replace(b'"seq": 1', b'"seq": 99'))
    with open_run_store(run) as s, pytest.raises(RlaifError) as e:
        replay(RunLayout(run), s)
    msg = str(e.value)
    assert f"{path}:" in msg and "move it out of the run directory" in msg and len(msg.splitlines()) == 1, msg
    assert e.value.exit_code == 2
    assert _human_rows(run) == 0 and path.exists()


def test_a_journal_line_over_the_line_limit_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run")
    monkeypatch.setenv("RLAIF_MAX_LINE_BYTES", str(len(GOOD) + 10))
    path = _journal(run, GOOD + _entry("note", seq=2, key="k" * 200, source="viewer:ann", note=None))
    with open_run_store(run) as s, pytest.raises(RlaifError, match=rf"{path.name}:2: viewer journal entry is over"):
        replay(RunLayout(run), s)
    assert _human_rows(run) == 0


@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink"], ids=str)
def test_something_not_a_regular_file_in_place_of_a_journal_is_refused_without_blocking(tmp_path, kind):
    """A FIFO named like a journal blocked `rlaif view` and `rlaif run` for ever in open(); a directory was an
    IsADirectoryError traceback; a symbolic link was followed anywhere (/dev/zero)."""
    run = make_run(tmp_path / "run")
    d = RunLayout(run).viewer_journals
    d.mkdir()
    path = d / "00000000000000000001-1-0000aaaa.jsonl"
    {"fifo": os.mkfifo, "directory": os.mkdir, "symlink": lambda p: os.symlink("/dev/zero", p)}[kind](path)
    got: list = []

    def go():
        try:
            with open_run_store(run) as s:
                got.append(replay(RunLayout(run), s))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            got.append(e)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(20)
    if t.is_alive():  # blocked opening the FIFO: a writer unblocks it, then the test fails
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        t.join(20)
        pytest.fail("replay blocked on a FIFO in the journal folder")
    [e] = got
    assert isinstance(e, RlaifError) and str(path) in str(e) and e.exit_code == 2, repr(e)
