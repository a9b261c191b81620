"""The viewer's journal of kept writes (rlaif/viewer/journal.py): a verdict given while another process holds
the run store's write lock survives a kill of the viewer before its retry went in."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, view_in_pty
from test_viewer import JH, by_id, comps_of, make_run, viewer_labels

from rlaif.errors import RlaifError
from rlaif.layout import RunLayout
from rlaif.records import Feedback
from rlaif.store import Store
from rlaif.viewer import verdicts as V
from rlaif.viewer.journal import Journal, replay
from rlaif.viewer.queue import open_run_store

# Run in a child process, killed with SIGKILL by itself while the writes are kept: another connection of the
# child holds the store's write lock (the kill drops it, its transaction rolled back).
_CHILD = """
import asyncio, os, signal, sqlite3, sys
from rlaif.viewer.queue import open_run_store
run, mode = sys.argv[1], sys.argv[2]
store = open_run_store(run)
if mode == "pairwise":
    from rlaif.viewer.app import ViewerApp
    app = ViewerApp(store, {jh!r}, "tester")
    before, busy = ["f"], ["u", "t", "a", "b", "u"]  # flip p6 (stored) | undo it, tie p6, agree p2, both bad p3, undo
else:
    from rlaif.viewer.rate_app import RateApp
    from rlaif.viewer.rating import Response
    app = RateApp(store, [Response("p", "q", None, t) for t in "abc"], "rita")
    before, busy = ["plus"], ["u", "minus", "4", "x", "u"]  # a up (stored) | undo it, a down, b 4, c down, undo
other = sqlite3.connect(os.path.join(run, "store.sqlite"), isolation_level=None)

async def go():
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        for k in before:
            await pilot.press(k)
        other.execute("BEGIN IMMEDIATE")  # another process's write transaction
        other.execute("INSERT INTO meta VALUES ('other', 'process')")
        for k in busy:
            await pilot.press(k)
        print("KEPT", len(app.writes), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # before any retry: the power cut

asyncio.run(go())
"""


def _kill_mid_session(run: Path, mode: str) -> str:
    r = subprocess.run([sys.executable, "-c", _CHILD.format(jh=JH), str(run), mode], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    return r.stdout


def _journal_files(run: Path) -> list[Path]:
    d = RunLayout(run).viewer_journals
    return sorted(d.iterdir()) if d.exists() else []


def test_verdicts_kept_while_the_store_was_busy_survive_a_kill_and_are_stored_once(tmp_path):
    """The viewer keeps verdicts while another process holds the store; killed (SIGKILL) before the retry went
    in, they were lost: the guide's "a kill at any instant never loses committed work" did not hold for the
    one thing the viewer makes. Now each kept write is journaled (fsync'd) before the key returns, and the next
    opening writes them in order (a kept undo included; a kept verdict undone is not), each once."""
    run = make_run(tmp_path / "run")
    comps = by_id(comps_of(run))
    p6, p2 = comps["p6"], comps["p2"]
    assert "KEPT 3" in _kill_mid_session(run, "pairwise")  # undo p6, tie p6, agree p2 (both bad p3 undone)
    assert viewer_labels(run) == {p6.prompt: (p6.rejected, p6.chosen, "chosen", None)}  # only the flip went in
    [journal] = _journal_files(run)
    assert len(journal.read_text().splitlines()) == 3
    with open_run_store(run) as s:
        assert replay(RunLayout(run), s) == 3
    want = {p6.prompt: (p6.chosen, p6.rejected, "tie", None), p2.prompt: (p2.chosen, p2.rejected, "chosen", None)}
    assert viewer_labels(run) == want and _journal_files(run) == []
    with open_run_store(run) as s:
        assert replay(RunLayout(run), s) == 0  # once
        assert s.human_label_count() == 2
        assert s.db.execute("SELECT COUNT(*) FROM meta WHERE key LIKE 'viewer_journal:%'").fetchone()[0] == 0
    # The viewer opened next shows them as saved: its "you" column has the verdicts, nothing waits.
    from rlaif.viewer.app import ViewerApp

    store = open_run_store(run)
    app = ViewerApp(store, JH, "tester")
    seen = {}

    async def go():
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            table = app.query_one("#queue")
            seen["you"] = {app.queue[i].prompt_id: str(table.get_row_at(i)[3]) for i in range(3)}
            seen["status"] = str(app.query_one("#status").render())
    try:
        asyncio.run(go())
    finally:
        store.close()
    assert seen["you"] == {"p6": "tie", "p2": "A", "p3": "·"}
    assert "2/6 reviewed" in seen["status"] and "not saved" not in seen["status"]


def test_ratings_kept_while_the_store_was_busy_survive_a_kill(tmp_path):
    run = make_run(tmp_path / "run")
    assert "KEPT 3" in _kill_mid_session(run, "rate")  # undo a's up, a down, b 4 (c down undone)
    with Store(run / "store.sqlite") as s:
        assert [(f.completion, f.kind, f.value) for f in s.feedback()] == [("a", "thumbs", 1)]
        assert replay(RunLayout(run), s) == 3
        assert sorted((f.completion, f.kind, f.value) for f in s.feedback()) == [("a", "thumbs", 0), ("b", "rating", 4)]
    assert _journal_files(run) == []


def _journal_of(run: Path, writes: list) -> Path:
    """A journal left by a session that ended (its lock dropped) holding ``writes``."""
    j = Journal(RunLayout(run).viewer_journals)
    for w in writes:
        j.append(w)
    path = j.path
    j._f.close()  # what the kernel does when the viewer dies
    return path


@pytest.mark.parametrize("cut", [1, 20, -1], ids=["one-byte", "mid-line", "newline-missing"])
def test_a_last_line_cut_short_by_a_kill_mid_append_is_ignored(tmp_path, cut):
    run = make_run(tmp_path / "run")
    c = by_id(comps_of(run))
    path = _journal_of(run, [V.verdict_write(c["p1"], "agree", "ann"), V.verdict_write(c["p2"], "flip", "ann"),
                             V.verdict_write(c["p3"], "tie", "ann")])
    data = path.read_bytes()
    last = data.rindex(b"\n", 0, len(data) - 1) + 1  # where the third line starts
    path.write_bytes(data[:last + cut] if cut > 0 else data[:cut])
    with open_run_store(run) as s:
        assert replay(RunLayout(run), s) == 2
    assert set(viewer_labels(run)) == {c["p1"].prompt, c["p2"].prompt} and not path.exists()


def test_a_bad_line_before_the_last_is_an_error_naming_it_and_nothing_is_stored(tmp_path):
    run = make_run(tmp_path / "run")
    c = by_id(comps_of(run))
    path = _journal_of(run, [V.verdict_write(c["p1"], "agree", "ann"), V.verdict_write(c["p2"], "flip", "ann")])
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([lines[0], b'{"seq": 2, "op": "rm -rf", "args": {}}', lines[1], b""]))
    with open_run_store(run) as s, pytest.raises(RlaifError, match=rf"{path.name}:2: not a viewer journal entry"):
        replay(RunLayout(run), s)
    assert viewer_labels(run) == {} and path.exists()


def test_entries_the_store_took_before_the_kill_are_not_written_again(tmp_path):
    """Killed after the store took the journal's first two writes but before the journal was emptied: the
    replay writes the third only. Written twice, the note (on no verdict yet: nothing) would land on the
    verdict made after it, and the verdict keep it."""
    run = make_run(tmp_path / "run")
    c = by_id(comps_of(run))["p1"]
    writes = [V.note_write(c, "ann", "typed first"), V.verdict_write(c, "agree", "ann"),
              V.verdict_write(c, "flip", "ann")]
    path = _journal_of(run, writes)
    with Store(run / "store.sqlite") as s:  # what the session stored, each with its entry's mark and key press
        for seq, w in enumerate(writes[:2], 1):
            with s.journaled(path.stem, seq, w.at):
                w(s)
        assert replay(RunLayout(run), s) == 1
    assert viewer_labels(run) == {c.prompt: (c.rejected, c.chosen, "chosen", None)}


def test_a_write_and_its_mark_go_in_together_or_not_at_all(tmp_path):
    run = make_run(tmp_path / "run")
    c = by_id(comps_of(run))["p1"]
    with Store(run / "store.sqlite") as s:
        with pytest.raises(RuntimeError), s.journaled("j", 1):
            V.verdict_write(c, "agree", "ann")(s)  # its own `with db:` does not commit inside
            raise RuntimeError("killed")
        assert s.journal_stored("j") == 0 and s.human_label_count() == 0
        with s.journaled("j", 1):
            V.verdict_write(c, "agree", "ann")(s)
        assert s.journal_stored("j") == 1 and s.human_label_count() == 1


def test_a_running_viewers_journal_is_left_to_it(tmp_path):
    run = make_run(tmp_path / "run")
    j = Journal(RunLayout(run).viewer_journals)
    j.append(V.verdict_write(by_id(comps_of(run))["p1"], "agree", "ann"))  # held (flock) by this session
    with open_run_store(run) as s:
        assert replay(RunLayout(run), s) == 0
        assert viewer_labels(run) == {} and j.path.exists()
        j.close(s, remove=False)  # the session ends with it kept: the next opening stores it
        assert replay(RunLayout(run), s) == 1
    assert len(viewer_labels(run)) == 1


def test_records_come_back_from_the_journal_as_they_went_in(tmp_path):
    run = make_run(tmp_path / "run")
    fb = Feedback("q", "a", "rating", 4, 5, "viewer:rita", "rita", "ok", 12.5)
    from rlaif.viewer import rating as R

    path = _journal_of(run, [R.undo_write(R.RateUndo(fb.key, fb.source, fb, "rating 4"))])
    with Store(run / "store.sqlite") as s:
        assert replay(RunLayout(run), s) == 1
        assert s.feedback() == [fb]
    assert not path.exists()


def test_rlaif_run_stores_what_an_ended_viewer_journaled_before_it_mixes(tiny_project):
    """`rlaif run` reads the human labels to mix: a viewer killed with verdicts kept must not leave them out until
    the next `rlaif view`."""
    from rlaif.config import load_config
    from rlaif.pipeline import open_run
    from rlaif.records import HumanLabel
    from rlaif.viewer.journal import Write

    label = HumanLabel("a prompt", "better", "worse", "chosen", "viewer:ann", "ann")
    run_dir = tiny_project / "run"
    run_dir.mkdir()
    _journal_of(run_dir, [Write("label", {"label": label, "keep_note": True, "what": "agree"})])
    run = open_run(load_config(str(tiny_project / "pipeline.yaml"), []))
    try:
        assert run.store.human_label(label.key, "viewer:ann") == label
    finally:
        run.store.close()
        run.lock.release()
    assert _journal_files(run_dir) == []


@pytest.mark.slow
def test_rlaif_view_killed_with_a_verdict_kept_saves_it_when_opened_again(tmp_path):
    """End to end, in a real terminal: `rlaif view`, the store held by another process, `f`, kill -9; the next
    `rlaif view` stores the flip, says so, and quits cleanly."""
    run = make_run(tmp_path / "run")
    p6 = by_id(comps_of(run))["p6"]
    proc, master, read_until, out = view_in_pty(run)
    other = sqlite3.connect(run / "store.sqlite", isolation_level=None)
    try:
        assert read_until(lambda: b"reviewed" in out and b"quit" in out, 30), out[-2000:]
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO meta VALUES ('other', 'process')")
        os.write(master, b"f")
        assert read_until(lambda: any(p.read_bytes().endswith(b"\n") for p in _journal_files(run)), 15), out[-2000:]
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)
        other.rollback()
        other.close()
    assert viewer_labels(run) == {}  # not stored: the viewer died first
    proc, master, read_until, out = view_in_pty(run)
    try:
        assert read_until(lambda: b"saved 1 write" in out, 30), out[-2000:]
        assert viewer_labels(run) == {p6.prompt: (p6.rejected, p6.chosen, "chosen", None)}
        os.write(master, b"q")
        assert read_until(lambda: proc.poll() is not None, 15), "viewer did not quit on q"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        os.close(master)
    assert proc.returncode == 0 and b"Traceback" not in out, out[-2000:]
    assert _journal_files(run) == []


@pytest.mark.parametrize("command", [["labels", "stats"], ["labels", "export", "--format", "jsonl", "-o"], ["show"]],
                         ids=["stats", "export", "show"])
def test_read_only_label_commands_say_how_many_journaled_writes_are_not_stored_yet(tmp_path, capsys, command):
    """`labels stats`, `labels export` and `show` read the store only: a write a killed viewer journaled is not in what
    they count or write until `rlaif view` / `rlaif run` stores it. They do not store it (a write from a read-only
    command), but say so in one line on stderr, so an export never silently lacks it; the journal stays."""
    from rlaif.cli import main

    run = make_run(tmp_path / "run")
    c = by_id(comps_of(run))
    writes = [V.verdict_write(c["p1"], "agree", "ann"), V.verdict_write(c["p2"], "flip", "ann"),
              V.verdict_write(c["p3"], "tie", "ann")]
    argv = [*command, str(tmp_path / "out.jsonl"), str(run)] if "export" in command else [*command, str(run)]
    assert main(argv) == 0
    assert "journaled" not in capsys.readouterr().err  # no journal: nothing said
    path = _journal_of(run, writes)
    with Store(run / "store.sqlite") as s:  # the session stored the first before it was killed
        with s.journaled(path.stem, 1):
            writes[0](s)
    assert main(argv) == 0
    [line] = [x for x in capsys.readouterr().err.splitlines() if "journaled" in x]
    assert line.startswith("warning: 2 viewer write(s) journaled in ") and f"`rlaif view {run}`" in line
    assert path.exists() and len(viewer_labels(run)) == 1  # nothing stored by a read-only command


# Two viewers of the same annotator on one run: a write one of them journaled (kept while the store was busy, then
# killed) must not replace, when replayed, a newer verdict the other stored on the same comparison meanwhile.
def _label_write(c, verdict: str, at: float):
    from rlaif.viewer.journal import Write

    w = V.verdict_write(c, verdict, "ann")
    return Write(w.op, w.args, at)


def test_a_replayed_write_does_not_replace_a_newer_verdict_another_viewer_stored(tmp_path):
    import time

    run = make_run(tmp_path / "run")
    c = by_id(comps_of(run))
    path = _journal_of(run, [_label_write(c["p1"], "agree", time.time() - 60),  # session 1, store busy, killed
                             _label_write(c["p2"], "agree", time.time() - 60)])
    with Store(run / "store.sqlite") as s:
        V.verdict_write(c["p1"], "flip", "ann")(s)  # session 2, same annotator, later, stored at once
        assert replay(RunLayout(run), s) == 1  # p2's only
    p1, p2 = c["p1"], c["p2"]
    assert viewer_labels(run) == {p1.prompt: (p1.rejected, p1.chosen, "chosen", None),
                                  p2.prompt: (p2.chosen, p2.rejected, "chosen", None)}
    assert not path.exists()


@pytest.mark.parametrize("newer_first", [True, False], ids=["newer-session-journal-first", "older-first"])
def test_two_sessions_journals_leave_the_newest_verdict_in_either_order(tmp_path, newer_first):
    """A replayed write is dated by its key press, not by when the replay stored it: else the journal replayed
    first would look newer than the other's later verdict and hide it."""
    import time

    run = make_run(tmp_path / "run")
    p1 = by_id(comps_of(run))["p1"]
    old, new = _label_write(p1, "agree", time.time() - 60), _label_write(p1, "flip", time.time() - 30)
    for w in (new, old) if newer_first else (old, new):  # journals replay in the order their sessions began
        _journal_of(run, [w])
    with open_run_store(run) as s:
        assert replay(RunLayout(run), s) == (1 if newer_first else 2)
        assert s.human_label(p1.key, "viewer:ann").created_at == new.at
    assert viewer_labels(run) == {p1.prompt: (p1.rejected, p1.chosen, "chosen", None)}


def test_a_kept_write_stored_by_the_session_is_dated_by_its_key_press(tmp_path):
    """Killed after its retry stored the first of two kept writes on one comparison: the replay of the second
    (pressed later) must not be taken for older than the first, which it would if the first were dated when the
    retry stored it."""
    from rlaif.viewer.writes import Writes

    run = make_run(tmp_path / "run")
    p1 = by_id(comps_of(run))["p1"]
    store = open_run_store(run)
    writes = Writes(store, Journal(RunLayout(run).viewer_journals))
    other = sqlite3.connect(run / "store.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock: both are kept and journaled
    assert not writes.submit(V.verdict_write(p1, "agree", "ann"), lambda _: None, p1.key)
    assert not writes.submit(V.verdict_write(p1, "flip", "ann"), lambda _: None, p1.key)
    other.rollback()

    def killed(_):
        raise KeyboardInterrupt  # after the first went in: the session dies before the second

    writes._queue[0] = writes._queue[0]._replace(then=killed)
    with pytest.raises(KeyboardInterrupt):
        writes.flush()
    writes.journal._f.close()  # the kernel drops its lock
    store.close()
    with open_run_store(run) as s:
        assert replay(RunLayout(run), s) == 1
    assert viewer_labels(run) == {p1.prompt: (p1.rejected, p1.chosen, "chosen", None)}  # the flip, pressed last
