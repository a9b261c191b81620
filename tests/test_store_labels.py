"""The run store's human-label methods (the only place their SQL lives)."""

from __future__ import annotations

import pytest

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
