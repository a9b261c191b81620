"""The run store's human-label methods (the only place their SQL lives)."""

from __future__ import annotations

import sqlite3

import pytest
from conftest import verdict_during_write

from rlaif.errors import RlaifError
from rlaif.records import HumanLabel
from rlaif.store import Store
from rlaif.vocab import BOTH_BAD, FILE, IMPORT, PREFERENCE, TIE, VIEWER, file_source, import_source, viewer_source


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "store.sqlite") as s:
        yield s


def test_file_labels_are_deleted_by_prefix_and_nothing_else(store):
    store.add_human_labels([
        HumanLabel("q", "a", "b", source=file_source("l.jsonl:1")),
        HumanLabel("q", "a", "b", source=import_source("x.jsonl", 1)),
        HumanLabel("q", "a", "b", TIE, viewer_source("ann")),
        HumanLabel("q", "a", "b", source="fileXl.jsonl:2"),  # "_"/"%" in a prefix must not act as wildcards
    ])
    store.delete_human_labels_from("file_")
    assert store.human_label_count() == 4
    store.delete_human_labels_from(FILE)
    assert sorted(h.source for h in store.human_labels()) == ["fileXl.jsonl:2", f"{IMPORT}x.jsonl:1", f"{VIEWER}ann"]


def test_one_label_per_comparison_and_source_and_restore_keeps_its_time(store):
    h = HumanLabel("q", "a", "b", source=viewer_source("ann"), note="first")
    store.add_human_labels([h])
    old = store.human_label(h.key, h.source)
    assert old == h and old.created_at is not None  # created_at is not part of a label's identity
    store.add_human_labels([HumanLabel("q", "b", "a", BOTH_BAD, h.source)])
    assert store.human_label_count() == 1 and store.human_label(h.key, h.source).label == BOTH_BAD
    store.set_human_label_note(h.key, h.source, "later")
    assert store.human_label(h.key, h.source).note == "later"
    store.restore_human_label(h.key, old)
    back = store.human_label(h.key, h.source)
    assert (back, back.note, back.created_at) == (old, "first", old.created_at)
    store.delete_human_label(h.key, h.source)
    assert store.human_label(h.key, h.source) is None and store.human_labels() == []


def test_labels_by_key_in_chunks_oldest_first(store):
    labels = [HumanLabel(f"q{i}", "a", "b", source=file_source(f"l:{i}")) for i in range(1203)]
    labels.append(HumanLabel("q7", "b", "a", TIE, viewer_source("ann")))
    store.add_human_labels(labels)
    keys = [h.key for h in labels[::2]]
    got = store.human_labels_by_key(keys)
    assert set(got) == set(keys)
    assert [h.source for h in got[labels[0].key]] == ["file:l:0"]
    assert [h.label for h in store.human_labels_by_key()[labels[7].key]] == [PREFERENCE, TIE]
    assert store.human_labels_by_key([]) == {}


@pytest.mark.parametrize("bad", [False, True], ids=["import-completes", "bad-record-imports-nothing"])
def test_a_verdict_given_while_an_import_reads_its_file_is_not_refused(tmp_path, bad):
    """Two connections, as `labels import` and `rlaif view` in two processes: the import's file is read (slowly,
    here: the reader waits for the verdict) while the viewer writes a verdict with a short busy timeout. The
    import held the store's write lock while it read, so the verdict failed with "database is locked"; staged,
    it takes the lock only for its final copy. A bad record still leaves nothing of the import."""
    path = tmp_path / "store.sqlite"
    Store(path).close()
    labels = [HumanLabel(f"q{i}", "a", "b", source=import_source("big.jsonl", i)) for i in range(1, 4)]
    bad_record = RlaifError("big.jsonl:4: label record needs a non-empty string field 'prompt'") if bad else None
    errors = verdict_during_write(path, lambda s, stream: s.import_human_labels(stream), labels,
                                  HumanLabel("q1", "a", "b", TIE, viewer_source("ann")), bad_record)
    with Store(path) as s:
        got = sorted(h.source for h in s.human_labels())
    imported = [] if bad else [import_source("big.jsonl", i) for i in (1, 2, 3)]
    assert got == sorted([viewer_source("ann"), *imported])
    assert [type(e) for e in errors] == ([RlaifError] if bad else [])


def test_no_room_to_stage_an_import_is_one_error_and_imports_nothing(store):
    store.db.execute("PRAGMA temp.max_page_count=8")  # the temp folder full, as SQLite sees it
    labels = [HumanLabel(f"q{i}", "a" * 500, "b", source=import_source("big.jsonl", i)) for i in range(1, 200)]
    with pytest.raises(RlaifError, match="no room to stage the labels.*SQLITE_TMPDIR"):
        store.import_human_labels(labels)
    assert store.human_label_count() == 0


def test_an_import_that_finds_the_store_busy_past_the_timeout_is_one_error_and_imports_nothing(tmp_path):
    """Another process holds the write lock past the busy timeout (a judge stage writing a million pairs):
    the import says so in one line (exit 1: nothing wrong with the file) and stores nothing."""
    path = tmp_path / "store.sqlite"
    Store(path).close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with Store(path, busy_timeout=0.1) as s:
            with pytest.raises(RlaifError, match="busy for 0.1 s.*nothing was imported") as e:
                s.import_human_labels([HumanLabel("q", "a", "b", source=import_source("f.jsonl", 1))])
            assert e.value.exit_code == 1
    finally:
        other.execute("ROLLBACK")
        other.close()
    with Store(path) as s:
        assert s.human_label_count() == 0
