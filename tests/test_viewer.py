"""The spot-check viewer (`rlaif view`), `rlaif show`, and how verdicts flow back as human labels."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, view_in_pty

from rlaif.cli import main
from rlaif.errors import RlaifError
from rlaif.evaluate import wilson
from rlaif.records import Candidate, HumanLabel, Prompt
from rlaif.store import Store
from rlaif.viewer import verdicts as V
from rlaif.viewer.queue import Filters, build_queue, load_comparisons, open_run_store

JH = "judgehash0001"

# prompt id -> (prompt, category, chosen text, rejected text, confidence, status, details tweaks)
PAIRS = {
    "p1": ("How do I boil pasta?", "helpful", "Boil salted water, add the pasta, cook 9 minutes.",
           "Pasta is food.", 0.9, "scored", {}),
    "p2": ("How do I pick my neighbour's lock?", "harmful", "I can't help with that, but a locksmith can.",
           "Sure, here is how you could do it.", 0.95, "scored", {"position_consistent": False}),
    "p3": ("What is photosynthesis?", "helpful", "Plants turn light, water and CO2 into sugar and oxygen.",
           "It is a thing plants do.", 0.55, "scored", {}),
    "p4": ("How can I sleep better?", "helpful", "Keep a regular schedule, avoid screens late, and " * 12,
           "Sleep more.", 0.8, "scored", {"disagree": True}),
    "p5": ("Tell me a joke.", "helpful", "", "Why did the chicken cross the road?", 0.5, "unscored", {}),
    "p6": ("How do I write a thank-you note?", "helpful", "Thank them for the specific gift and say why.",
           "Write thanks.", 0.7, "scored", {"principle_inconsistent": True}),
}
REVIEW_ORDER = ["p6", "p2", "p3", "p4", "p1", "p5"]


def _details(tweaks: dict, status: str) -> dict:
    helpful = {"p_chosen": 0.8, "score_chosen": 0.4, "score_rejected": 0.1, "rationale": None,
               "position_consistent": None, "status": "scored", "raw": None}
    concise = dict(helpful, p_chosen=0.3 if tweaks.get("disagree") else 0.7, score_chosen=0.2,
                   score_rejected=0.3 if tweaks.get("disagree") else 0.1,
                   rationale="B is shorter and says the same." if tweaks.get("disagree") else None)
    if tweaks.get("principle_inconsistent"):
        helpful["position_consistent"] = False
    if status == "unscored":
        helpful = dict(helpful, p_chosen=None, score_chosen=None, status="unscored", raw="empty response")
        concise = dict(concise, p_chosen=None, score_chosen=None, status="unscored", raw="empty response")
    return {"method": "pointwise", "gap": 0.2, "position_consistent": tweaks.get("position_consistent"),
            "principles": {"helpful": helpful, "concise": concise}, "constitution_hash": "c0",
            "principle_hashes": {"helpful": "h1", "concise": "h2"},
            "judge": {"backend": "scripted", "model": "scripted", "template_hash": "t"}}


def make_run(run_dir: Path, stage: bool = True) -> Path:
    """A run directory whose store holds the PAIRS comparisons and a finished judge stage."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with Store(run_dir / "store.sqlite") as s:
        s.put_prompts([Prompt(pid, t[0], t[1]) for pid, t in PAIRS.items()])
        s.add_candidates([Candidate(f"{pid}-{i}", pid, i, t[2 + i], "pol") for pid, t in PAIRS.items()
                          for i in (0, 1)], "gen")
        s.put_ai_pairs(JH, [(pid, f"{pid}-0", f"{pid}-1", t[4], t[5], _details(t[6], t[5]))
                            for pid, t in PAIRS.items()])
        if stage:
            s.set_stage("judge", "h", "done", 1.0, {"judge_hash": JH})
    return run_dir


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return make_run(tmp_path / "run")


def comps_of(run_dir: Path):
    with open_run_store(run_dir) as s:
        return load_comparisons(s)


def queue_of(run_dir: Path, filters: Filters | None = None, how: str = "review", seed: int = 0) -> list:
    """The review queue (paged from SQL) as a list."""
    with open_run_store(run_dir) as s:
        return list(build_queue(s, filters, how, seed))


def by_id(comps):
    return {c.prompt_id: c for c in comps}


def viewer_labels(run_dir: Path) -> dict[str, tuple]:
    """prompt text -> (chosen, rejected, label, note) of every viewer label."""
    db = sqlite3.connect(run_dir / "store.sqlite")
    rows = db.execute("SELECT prompt, chosen, rejected, label, note FROM human_labels "
                      "WHERE source LIKE 'viewer:%'").fetchall()
    db.close()
    return {r[0]: r[1:] for r in rows}


# ---------------------------------------------------------------- queue
def test_review_order_puts_inconsistent_low_confidence_and_split_verdicts_first(run_dir):
    q = queue_of(run_dir)
    assert [c.prompt_id for c in q] == REVIEW_ORDER
    tiers = [c.tier() for c in q]
    assert tiers == [0, 0, 1, 2, 3, 4]  # the SQL order agrees with the tiers the viewer shows
    assert by_id(q)["p4"].disagreeing == ["concise"]


def test_random_order_is_seeded_and_stable(run_dir):
    a = [c.prompt_id for c in queue_of(run_dir, how="random", seed=0)]
    b = [c.prompt_id for c in queue_of(run_dir, how="random", seed=0)]
    orders = {tuple(c.prompt_id for c in queue_of(run_dir, how="random", seed=s)) for s in range(6)}
    assert a == b and sorted(a) == sorted(PAIRS)
    assert len(orders) > 1  # the seed matters


@pytest.mark.parametrize("filters, expected", [
    (Filters(status="unscored"), ["p5"]),
    (Filters(status="unreviewed"), ["p6", "p2", "p3", "p4", "p1"]),
    (Filters(status="reviewed"), []),
    (Filters(search="PHOTO"), ["p3"]),
    (Filters(search="shorter and says"), ["p4"]),  # a rationale
    (Filters(search="scripted"), []),  # the judge's name in the details is not searched
    (Filters(category="harmful"), ["p2"]),
    (Filters(principle="concise", search="pasta"), ["p1"]),
    (Filters(principle="nope"), []),
    (Filters(principle="conc"), []),  # whole ids only
], ids=["unscored", "unreviewed", "reviewed", "search-prompt", "search-rationale", "search-not-details",
        "category", "and", "principle", "principle-prefix"])
def test_filters(run_dir, filters, expected):
    assert [c.prompt_id for c in queue_of(run_dir, filters)] == expected


def test_queue_positions_and_pages_match_the_whole_list(run_dir, monkeypatch):
    from rlaif.viewer.queue import Queue

    monkeypatch.setattr(Queue, "PAGE", 4)  # several pages over 6 comparisons
    with open_run_store(run_dir) as s:
        for how in ("review", "random"):
            q = build_queue(s, how=how, seed=1)
            items = list(q)
            assert len(q) == len(items) == 6 and q[-1].prompt_id == items[-1].prompt_id
            assert [q.position(c) for c in items] == list(range(6))
        q = build_queue(s, Filters(category="harmful"))
        assert q.position(comps_of(run_dir)[0]) is None  # p1 is filtered out


def test_reviewed_and_source_filters_follow_human_labels(run_dir):
    c = by_id(comps_of(run_dir))["p1"]
    with open_run_store(run_dir) as s:
        s.add_human_labels([HumanLabel(c.prompt, c.chosen, c.rejected, "chosen", "file:labels.jsonl:1")])
    assert [x.prompt_id for x in queue_of(run_dir, Filters(status="reviewed"))] == ["p1"]
    assert [x.prompt_id for x in queue_of(run_dir, Filters(source="file:"))] == ["p1"]
    assert queue_of(run_dir, Filters(source="viewer:")) == []
    assert [x.prompt_id for x in queue_of(run_dir, Filters(status="unreviewed"))] == ["p6", "p2", "p3", "p4"]


def test_a_v2_store_is_upgraded_in_place(run_dir):
    db = sqlite3.connect(run_dir / "store.sqlite")  # back to how schema v2 stored AI pairs
    db.executescript("""CREATE TABLE old AS SELECT judge_hash, prompt_id, chosen_id, rejected_id, confidence, status,
                        details FROM ai_pairs; DROP TABLE ai_pairs; ALTER TABLE old RENAME TO ai_pairs;
                        UPDATE meta SET value='2' WHERE key='schema_version';""")
    db.close()
    with pytest.raises(RlaifError, match="earlier rlaif"):
        Store(run_dir / "store.sqlite", readonly=True)
    assert [c.prompt_id for c in queue_of(run_dir)] == REVIEW_ORDER  # a writable open upgrades it


def test_wilson_interval():
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert wilson(0, 0) is None


# ---------------------------------------------------------------- verdict writes and undo
def test_verdicts_store_labels_and_undo_restores_the_replaced_one(run_dir):
    comps = by_id(comps_of(run_dir))
    with open_run_store(run_dir) as s:
        V.verdict_write(comps["p1"], "agree", "ann", "first look")(s)
        V.verdict_write(comps["p2"], "both_bad", "ann")(s)
        second = V.verdict_write(comps["p1"], "flip", "ann")(s)  # replaces, keeps the note
        labels = viewer_labels(run_dir)
        p1 = comps["p1"]
        assert labels[p1.prompt] == (p1.rejected, p1.chosen, "chosen", "first look")
        assert labels[comps["p2"].prompt][2] == "both_bad"
        V.undo_write(second)(s)
        assert viewer_labels(run_dir)[p1.prompt] == (p1.chosen, p1.rejected, "chosen", "first look")
        assert s.db.execute("SELECT COUNT(*) FROM human_labels").fetchone()[0] == 2


# ---------------------------------------------------------------- the TUI
def drive(run_dir: Path, keys: list[str], annotator: str = "tester", size=(80, 24), **kw):
    """Run the app under Textual's pilot, press ``keys``, return the app (its store is closed)."""
    from rlaif.viewer.app import ViewerApp

    store = open_run_store(run_dir)
    app = ViewerApp(store, JH, annotator, **kw)

    async def go():
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            for k in keys:
                await pilot.press(k)
            await pilot.pause()
            app.snapshot = {"status": str(app.query_one("#status").render()),
                            "queue": [c.prompt_id for c in app.queue], "cursor": app.cursor,
                            "rows": app.query_one("#queue").row_count,
                            "first_prompt": str(app.query_one("#queue").get_row_at(0)[-1]) if app.queue else None}
            await pilot.press("q")
    asyncio.run(go())
    store.close()
    return app


def test_app_flip_tie_undo_quit_stores_exactly_the_expected_labels(run_dir):
    comps = by_id(comps_of(run_dir))
    # queue: p6, p2, p3, ...: flip p6, tie p2, agree p3, undo (p3's label goes, cursor back on p3)
    app = drive(run_dir, ["f", "t", "a", "u"])
    assert app.snapshot["cursor"] == 2
    labels = viewer_labels(run_dir)
    p6, p2 = comps["p6"], comps["p2"]
    assert labels == {p6.prompt: (p6.rejected, p6.chosen, "chosen", None),
                      p2.prompt: (p2.chosen, p2.rejected, "tie", None)}
    db = sqlite3.connect(run_dir / "store.sqlite")
    assert {r[0] for r in db.execute("SELECT source FROM human_labels")} == {"viewer:tester"}
    assert {r[0] for r in db.execute("SELECT annotator FROM human_labels")} == {"tester"}
    db.close()
    assert "2/6 reviewed" in app.snapshot["status"]
    assert "AI agrees 0/1" in app.snapshot["status"]  # the tie is not scored


def test_app_note_search_skip_and_navigation(run_dir):
    comps = by_id(comps_of(run_dir))
    keys = ["j", "j", "k",                 # p2
            "n", *"nope", "escape",        # a note abandoned
            "n", *"recheck", "enter",      # a note kept for the next verdict
            "a",                           # agree p2, with the note -> p3
            "s",                           # skip p3 -> p4
            "slash", *"pasta", "enter"]    # only p1 left
    app = drive(run_dir, keys)
    assert app.snapshot["queue"] == ["p1"]
    assert viewer_labels(run_dir) == {comps["p2"].prompt: (comps["p2"].chosen, comps["p2"].rejected, "chosen",
                                                            "recheck")}
    assert "AI agrees 1/1" not in app.snapshot["status"]  # p2 is not in the searched queue


def test_app_shows_markup_like_text_literally(tmp_path, monkeypatch):
    """A prompt, an annotator or a search holding Rich/Textual markup ('[/INST]', '[/]', '[bold]') is text:
    the queue's prompt cells and the status line parsed it as markup (MarkupError: the viewer crashed on open)."""
    monkeypatch.setitem(PAIRS, "p6", ("[/INST] [bold]thank-you[/bold] note?",) + PAIRS["p6"][1:])
    run = make_run(tmp_path / "run")
    app = drive(run, ["a", "slash", *"[/INST]", "enter"], annotator="[bold]x[/]")
    assert app.snapshot["queue"] == ["p6"] and app.snapshot["status"].endswith("│ /[/INST] │ [bold]x[/]")
    assert viewer_labels(run)["[/INST] [bold]thank-you[/bold] note?"][2] == "chosen"


def test_a_conversation_prompt_is_shown_as_turns(tmp_path, monkeypatch, capsys):
    """A prompt with a system message (data.system_prompt) or several turns is stored as a JSON list of
    messages: the viewer, its queue and `rlaif show` printed that JSON instead of the turns."""
    from rlaif import chat

    conv = chat.encode([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tea or coffee?"}])
    monkeypatch.setitem(PAIRS, "p6", (conv,) + PAIRS["p6"][1:])
    run = make_run(tmp_path / "run")
    assert main(["show", str(run), "--search", "coffee"]) == 0
    out = capsys.readouterr().out
    assert "System: Be brief." in out and "User: Tea or coffee?" in out and '"role"' not in out
    app = drive(run, [])
    assert app.snapshot["queue"][0] == "p6" and app.snapshot["first_prompt"] == "System: Be brief. User: Tea or coffee?"


def test_app_keys_typed_in_the_note_box_stay_in_it(run_dir):
    """↓ or ↑ while typing a note moved the queue: the note, meant for p6, was held for p2 instead."""
    p6 = by_id(comps_of(run_dir))["p6"]
    app = drive(run_dir, ["a", "k", "n", *"x", "down", "pagedown", *"y", "enter"])
    assert app.snapshot["cursor"] == 0
    assert viewer_labels(run_dir) == {p6.prompt: (p6.chosen, p6.rejected, "chosen", "xy")}


def test_app_note_on_a_given_verdict_and_reload(run_dir):
    comps = by_id(comps_of(run_dir))
    p6 = comps["p6"]
    app = drive(run_dir, ["t", "k", "n", *"why", "enter", "u", "n", *"ok", "enter", "r"])
    # the tie on p6 got note "why"; undo took the note back; then note "ok"
    assert viewer_labels(run_dir) == {p6.prompt: (p6.chosen, p6.rejected, "tie", "ok")}
    assert app.snapshot["cursor"] == 0 and "1/6 reviewed" in app.snapshot["status"]


def test_app_undo_restores_a_previous_sessions_verdict(run_dir):
    drive(run_dir, ["b"])   # session 1: p6 both bad
    drive(run_dir, ["a", "u", "u"])  # session 2: agree on p6 replaces it, undo; the second u has nothing
    p6 = by_id(comps_of(run_dir))["p6"]
    assert viewer_labels(run_dir) == {p6.prompt: (p6.chosen, p6.rejected, "both_bad", None)}


def test_app_random_order_and_wide_layout(run_dir):
    app = drive(run_dir, [], order="random", seed=3, size=(160, 40))
    assert app.snapshot["queue"] == [c.prompt_id for c in queue_of(run_dir, how="random", seed=3)]
    assert app.snapshot["queue"] != REVIEW_ORDER


def screen_text(app) -> str:
    """The app's screen as plain text (what a terminal of app.size shows)."""
    import io

    from rich.console import Console

    w, h = app.size
    console = Console(width=w, height=h, file=io.StringIO(), force_terminal=True, record=True)
    console.print(app.screen._compositor.render_update(full=True))
    return console.export_text()


def test_app_screen_fits_80x24_and_shows_the_keys(run_dir):
    from rlaif.viewer.app import ViewerApp

    store = open_run_store(run_dir)
    app = ViewerApp(store, JH, "tester")
    seen = {}

    async def go():
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            seen["narrow"] = app.screen.has_class("wide")
            seen["text"] = screen_text(app)
            await pilot.resize_terminal(160, 40)
            await pilot.pause()
            seen["wide"] = app.screen.has_class("wide")
            await pilot.press("q")
    asyncio.run(go())
    store.close()
    assert seen["narrow"] is False and seen["wide"] is True
    for word in ("agree", "flip", "tie", "both bad", "skip", "note", "undo", "search", "quit", "reviewed"):
        assert word in seen["text"], word


def test_queue_fits_without_a_horizontal_scrollbar(run_dir):
    from rlaif.viewer.app import ViewerApp

    store = open_run_store(run_dir)
    app = ViewerApp(store, JH, "tester")
    seen = {}

    async def go():
        async with app.run_test(size=(160, 40)) as pilot:
            await pilot.pause()
            seen["text"] = screen_text(app)
            await pilot.press("q")
    asyncio.run(go())
    store.close()
    assert "▋" not in seen["text"] and "How do I write a thank-you note?" in seen["text"]


def test_render_handles_an_llm_judges_details():
    """Pairwise (LLM) details: no gap or scores, rationales, an unscored principle, a swapped-order check."""
    import io

    from rich.console import Console

    from rlaif.viewer.queue import Comparison
    from rlaif.viewer.render import render_panel

    c = Comparison.from_record({
        "prompt_id": "q", "prompt": "Is it safe?", "category": None, "chosen": "Yes, because x.", "rejected": "No.",
        "confidence": 0.8, "status": "scored", "chosen_id": "a", "rejected_id": "b",
        "details": {"method": "pairwise", "gap": None, "position_consistent": False, "principles": {
            "honest": {"p_chosen": 0.8, "score_chosen": None, "score_rejected": None, "rationale": "A explains why.",
                       "position_consistent": False, "status": "scored", "raw": "A"},
            "brief": {"p_chosen": None, "rationale": None, "position_consistent": None, "status": "unscored",
                      "raw": "unparseable"}}}})
    console = Console(width=80, file=io.StringIO(), record=True)
    console.print(render_panel(c, "1/1"))
    text = console.export_text()
    assert "honest: A explains why." in text and "unscored" in text and "gap —" in text
    assert "order-inconsistent" in text and c.tier() == 0


# ---------------------------------------------------------------- the loop: verdicts -> mix
def test_a_viewer_flip_overrides_the_ai_pair_in_the_mix(run_dir):
    from rlaif.config import MixConfig
    from rlaif.mixing import mix

    comps = by_id(comps_of(run_dir))
    with open_run_store(run_dir) as s:
        before = mix(s.ai_pairs(JH), s.human_labels(), MixConfig(), 0)[1]
        V.verdict_write(comps["p1"], "flip", "ann")(s)
        V.verdict_write(comps["p3"], "agree", "ann")(s)
        V.verdict_write(comps["p2"], "tie", "ann")(s)
        splits, stats = mix(s.ai_pairs(JH), s.human_labels(), MixConfig(human_eval_fraction=0), 0)
    assert before["human_overrides"] == 0
    assert stats["human_overrides"] == 2 and stats["human_disagreements"] == 1 and stats["human_ties"] == 1
    p1 = comps["p1"]
    rows = {(p.prompt, p.chosen, p.source) for p in splits["train"]}
    assert (p1.prompt, p1.rejected, "human") in rows and (p1.prompt, p1.chosen, "ai") not in rows


# ---------------------------------------------------------------- a real terminal
@pytest.mark.slow
def test_view_in_a_real_80x24_terminal(run_dir):
    """`python -m rlaif view` in a pseudo-terminal (Python's pty: no tmux needed): flip one, quit."""
    proc, master, read_until, out = view_in_pty(run_dir)
    try:
        assert read_until(lambda: b"reviewed" in out and b"quit" in out, 30), out[-2000:]
        os.write(master, b"f")
        assert read_until(lambda: len(viewer_labels(run_dir)) == 1, 15)
        os.write(master, b"q")
        assert read_until(lambda: proc.poll() is not None, 15), "viewer did not quit on q"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        os.close(master)
    assert proc.returncode == 0, out[-2000:]
    p6 = by_id(comps_of(run_dir))["p6"]
    assert viewer_labels(run_dir) == {p6.prompt: (p6.rejected, p6.chosen, "chosen", None)}
    assert b"Traceback" not in out


# ---------------------------------------------------------------- rlaif show
def test_show_prints_prompt_and_both_candidates(run_dir, capsys):
    assert main(["show", str(run_dir), "--search", "pasta"]) == 0
    out = capsys.readouterr().out
    assert "1 of 6 comparisons match" in out
    assert "How do I boil pasta?" in out and "Boil salted water" in out and "Pasta is food." in out
    assert main(["show", str(run_dir), "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "showing 2" in out and "thank-you note" in out and "neighbour's lock" in out
    assert "photosynthesis" not in out


def test_show_and_stats_print_markup_like_names_and_searches_as_text(run_dir, capsys):
    """`show --search '[/]'` and `labels stats` with an annotator '[/]' raised rich's MarkupError (a traceback)."""
    from rlaif.records import Feedback

    p1 = by_id(comps_of(run_dir))["p1"]
    with Store(run_dir / "store.sqlite") as s:
        s.add_human_labels([HumanLabel(p1.prompt, p1.chosen, p1.rejected, source="viewer:[/]", annotator="[/]")])
        s.add_feedback([Feedback(p1.prompt, p1.chosen, "thumbs", 1, 2, "viewer:[b]x[/b]")])
    assert main(["show", str(run_dir), "--search", "[/]"]) == 0
    assert "(filters: search=[/];" in capsys.readouterr().out
    assert main(["labels", "stats", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "viewer:[/]" in out and "viewer:[b]x[/b]" in out


@pytest.mark.slow
def test_show_stats_export_work_in_a_pipe_without_heavy_imports(run_dir, tmp_path):
    code = ("import sys; from rlaif.cli import main\n"
            f"rc = main(['show', {str(run_dir)!r}, '--status', 'unscored'])\n"
            f"rc += main(['labels', 'stats', {str(run_dir)!r}])\n"
            f"rc += main(['labels', 'export', {str(run_dir)!r}, '--format', 'parquet', '-o', "
            f"{str(tmp_path / 'x.parquet')!r}])\n"
            "import rlaif.viewer.app\n"
            "heavy = [m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules]\n"
            "print('HEAVY', heavy); sys.exit(rc)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Tell me a joke." in r.stdout and "Why did the chicken" in r.stdout and "unscored" in r.stdout
    assert "\x1b[" not in r.stdout  # no colour codes in a pipe
    assert "HEAVY []" in r.stdout


def test_verdicts_while_another_process_writes_the_store(run_dir):
    """A judge run committing batches to the same store does not make verdicts fail (WAL, busy timeout)."""
    import threading

    stop, errors = threading.Event(), []

    def judge_writer():
        try:
            with Store(run_dir / "store.sqlite") as s:
                i = 0
                while not stop.is_set():
                    s.cache_put_many({f"k{i}-{j}": {"score": j} for j in range(50)})
                    i += 1
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=judge_writer)
    t.start()
    try:
        comps = comps_of(run_dir)
        with open_run_store(run_dir) as s:
            for _ in range(5):
                for c in comps:
                    V.verdict_write(c, "agree", "busy")(s)
    finally:
        stop.set()
        t.join(30)
    assert not errors
    assert len(viewer_labels(run_dir)) == len(comps)
    with open_run_store(run_dir) as s:
        assert s.counts()["judge_cache"] > 0


def test_verdicts_given_while_another_process_holds_the_store_are_kept_then_saved_in_order(run_dir):
    """Another process holds the store's write lock (a large `labels import` swapping its labels in, a judge
    stage replacing its pairs): the viewer's verdicts are kept in order, counted in the status bar, and
    written once the store is free; undo drops a kept verdict unwritten, or undoes a stored one in turn;
    quitting waits for them. Before, the first verdict waited the busy timeout (30 s) and then failed: the
    viewer crashed, the verdict lost."""
    from rlaif.viewer.app import ViewerApp

    comps = by_id(comps_of(run_dir))
    store = open_run_store(run_dir)
    app = ViewerApp(store, JH, "tester")
    other = sqlite3.connect(run_dir / "store.sqlite", isolation_level=None)
    seen = {}

    async def go():
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("f")  # queue p6, p2, p3: flip p6, stored
            other.execute("BEGIN IMMEDIATE")  # the other process's write transaction
            other.execute("INSERT INTO meta VALUES ('other', 'process')")
            t0 = time.perf_counter()
            for k in ("t", "a", "u", "u"):  # tie p2, agree p3 (both kept); two undos drop them, unwritten
                await pilot.press(k)
            seen["cursor_after_drops"] = app.cursor
            await pilot.press("u")  # undoes the stored flip of p6 (kept, in turn)
            seen["cursor_after_undo"] = app.cursor
            for k in ("b", "a"):  # both bad p6, agree p2
                await pilot.press(k)
            seen["keys_s"] = time.perf_counter() - t0
            seen["status"] = str(app.query_one("#status").render())
            seen["you_kept"] = [str(app.query_one("#queue").get_row_at(i)[3]) for i in range(3)]
            seen["stored_while_busy"] = viewer_labels(run_dir)
            await pilot.press("q")  # refused while writes wait
            await pilot.pause()
            seen["running_after_q"] = app.is_running
            other.execute("COMMIT")
            for _ in range(100):  # the retry timer writes them, then quits
                if not app.is_running:
                    break
                await asyncio.sleep(0.05)
            seen["quit"] = not app.is_running
    try:
        asyncio.run(go())
    finally:
        other.close()
        store.close()
    p6, p2 = comps["p6"], comps["p2"]
    assert seen["stored_while_busy"] == {p6.prompt: (p6.rejected, p6.chosen, "chosen", None)}
    assert (seen["cursor_after_drops"], seen["cursor_after_undo"]) == (1, 0)
    assert "3 not saved yet" in seen["status"]
    assert seen["you_kept"] == ["…", "…", "·"]  # p6, p2 wait; p3's was dropped
    assert seen["keys_s"] < 4  # BUSY_S (0.5 s) for a key that finds no write kept; the others queue at once
    assert seen["running_after_q"] and seen["quit"]
    assert viewer_labels(run_dir) == {p6.prompt: (p6.chosen, p6.rejected, "both_bad", None),
                                      p2.prompt: (p2.chosen, p2.rejected, "chosen", None)}


# ---------------------------------------------------------------- bad input
def _old_schema(d: Path) -> None:
    make_run(d)
    db = sqlite3.connect(d / "store.sqlite")
    db.executescript("DROP TABLE ai_pairs; CREATE TABLE ai_pairs (judge_hash TEXT, prompt_id TEXT, "
                     "chosen_id TEXT, rejected_id TEXT, confidence REAL, details TEXT);")
    db.close()


BAD_RUNS = {
    "missing-dir": lambda d: None,
    "dir-is-a-file": lambda d: d.write_text("x"),
    "no-store": lambda d: d.mkdir(),
    "store-not-sqlite": lambda d: (d.mkdir(), (d / "store.sqlite").write_text("hello, not a database\n" * 10)),
    "store-empty": lambda d: (d.mkdir(), (d / "store.sqlite").write_bytes(b"")),
    "no-judge-stage": lambda d: make_run(d, stage=False),
    "old-schema": _old_schema,
}


@pytest.mark.parametrize("command", [["view"], ["show"], ["labels", "stats"], ["labels", "export"]],
                         ids=["view", "show", "stats", "export"])
@pytest.mark.parametrize("kind", list(BAD_RUNS), ids=list(BAD_RUNS))
def test_bad_run_dirs_exit_2_with_one_line(tmp_path, capsys, command, kind):
    d = tmp_path / "run"
    BAD_RUNS[kind](d)
    before = sorted(p.name for p in d.iterdir()) if d.is_dir() else None
    extra = ["--annotator", "x"] if command == ["view"] else []
    extra += ["--source", "ai", "-o", str(tmp_path / "out.jsonl")] if command[-1] == "export" else []
    assert main([*command, str(d), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert (sorted(p.name for p in d.iterdir()) if d.is_dir() else None) == before  # nothing written
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("args, message", [
    (["show", "{run}", "--principle", "nope"], "no comparison was judged on it"),
    (["show", "{run}", "--low-confidence", "2"], "--low-confidence"),
    (["view", "{run}", "--annotator", "a b"], "without spaces"),
    (["view", "{run}", "--annotator", "x"], "needs an interactive terminal"),  # pytest's stdin is no tty
    (["labels", "import", "{tmp}/nope.jsonl", "{run}"], "not found"),
    (["labels", "import", "{tmp}/bad.jsonl", "{run}"], "bad.jsonl:2: invalid JSON"),
    (["labels", "import", "{tmp}/ai.jsonl", "{run}"], "an AI label"),
    (["labels", "import", "{tmp}/badlabel.jsonl", "{run}"], "'label' must be one of"),
    (["labels", "import", "{tmp}/bad.parquet", "{run}"], "not a readable Parquet file"),
], ids=["unknown-principle", "low-confidence-range", "annotator-space", "view-no-tty", "import-missing",
        "import-bad-json", "import-ai-records", "import-bad-label", "import-bad-parquet"])
def test_bad_arguments_exit_2_with_one_line(tmp_path, run_dir, capsys, args, message):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{oops\n')
    (tmp_path / "ai.jsonl").write_text('{"kind": "ai", "prompt": "p", "chosen": "a", "rejected": "b"}\n')
    (tmp_path / "badlabel.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b", "label": "A"}\n')
    (tmp_path / "bad.parquet").write_text("not parquet")
    n_before = len(viewer_labels(run_dir))
    argv = [a.format(run=run_dir, tmp=tmp_path) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    with open_run_store(run_dir) as s:
        assert s.db.execute("SELECT COUNT(*) FROM human_labels").fetchone()[0] == n_before == 0


def test_app_pages_through_a_queue_longer_than_its_table(tmp_path):
    from rlaif.viewer.app import WINDOW

    run = tmp_path / "big"
    run.mkdir()
    n = WINDOW * 2 + 37
    with Store(run / "store.sqlite") as s:
        s.put_prompts([Prompt(f"q{i:04d}", f"question {i}", "helpful") for i in range(n)])
        s.add_candidates([Candidate(f"q{i:04d}-{k}", f"q{i:04d}", k, f"answer {k} to {i}", "pol")
                          for i in range(n) for k in (0, 1)], "gen")
        s.put_ai_pairs(JH, [(f"q{i:04d}", f"q{i:04d}-0", f"q{i:04d}-1", 0.7 + (i % 10) / 40, "scored",
                             _details({}, "scored")) for i in range(n)])
        s.set_stage("judge", "h", "done", 1.0, {"judge_hash": JH})
    with open_run_store(run) as s:
        order = [c.prompt_id for c in build_queue(s)]
    app = drive(run, ["end", "up", "a"])  # agree on the second to last; the cursor moves to the last
    assert app.snapshot["cursor"] == n - 1 and app.snapshot["rows"] == WINDOW
    assert f"1/{n} reviewed" in app.snapshot["status"] and "AI agrees 1/1" in app.snapshot["status"]
    i = int(order[-2][1:])
    assert viewer_labels(run) == {f"question {i}": (f"answer 0 to {i}", f"answer 1 to {i}", "chosen", None)}


@pytest.mark.parametrize("labelled", [["p2"], ["p3", "p4"], ["p6", "p2", "p5"]], ids=["one", "two-tiers", "three"])
def test_reviewed_and_unreviewed_queues_counted_from_the_labels_keep_the_review_order(run_dir, labelled):
    """Reviewed / unreviewed tiers are counted from the human labels (not by a probe per pair); the queues are
    the whole review queue filtered, in its order, whatever tiers the labels fall in (a pair labelled twice
    counts once)."""
    comps = by_id(comps_of(run_dir))
    with open_run_store(run_dir) as s:
        for i, pid in enumerate(labelled):
            c = comps[pid]
            s.add_human_labels([HumanLabel(c.prompt, c.chosen, c.rejected, "chosen", f"file:l.jsonl:{i}"),
                                HumanLabel(c.prompt, c.rejected, c.chosen, "chosen", "viewer:other")])
    whole = [c.prompt_id for c in queue_of(run_dir)]
    scored = {c.prompt_id for c in comps.values() if c.scored}
    already = {c.prompt_id for c in comps.values() if c.reviewed}  # labels the fixture made
    assert [x.prompt_id for x in queue_of(run_dir, Filters(status="reviewed"))] == \
        [p for p in whole if p in set(labelled) | already]
    assert [x.prompt_id for x in queue_of(run_dir, Filters(status="unreviewed"))] == \
        [p for p in whole if p in scored and p not in set(labelled) | already]


def test_drafts_hold_a_note_until_a_verdict_and_undo_newest_first():
    """The rule both viewer screens share (rlaif/viewer/drafts.py)."""
    from rlaif.viewer.drafts import Drafts

    d: Drafts[str] = Drafts()
    assert d.noted("k1", "first", None) is False           # no verdict yet: held
    assert d.editing("k1", "saved") == "first" and d.pending("k1") == "first"
    assert d.noted("k1", "", None) is False and d.pending("k1") is None   # an empty note drops it
    assert d.editing("k1", "saved") == "saved"
    d.noted("k1", "again", None)
    assert d.take("k1") == "again" and d.take("k1") is None   # taken once, by the verdict
    d.wrote("verdict-1")
    assert d.noted("k1", "later", "note-1") is True and d.pending("k1") is None   # saved at once
    assert [d.undo(), d.undo(), d.undo()] == ["note-1", "verdict-1", None]


def _mixed_run(run: Path, n: int = 60) -> Path:
    """n comparisons over every review tier, confidences with ties (so the ids break them), a third labelled."""
    tweaks = ({}, {"position_consistent": False}, {"disagree": True}, {}, {"principle_inconsistent": True})
    run.mkdir()
    with Store(run / "store.sqlite") as s:
        ids = [f"m{(i * 37) % n:03d}" for i in range(n)]  # stored out of id order
        s.put_prompts([Prompt(pid, f"question {pid}", "helpful") for pid in ids])
        s.add_candidates([Candidate(f"{pid}-{k}", pid, k, f"answer {k} to {pid}", "pol") for pid in ids
                          for k in (0, 1)], "gen")
        status = ["unscored" if i % 11 == 0 else "scored" for i in range(n)]
        s.put_ai_pairs(JH, [(pid, f"{pid}-0", f"{pid}-1", (0.5, 0.55, 0.7, 0.9)[i % 4], status[i],
                             _details(tweaks[i % 5], status[i])) for i, pid in enumerate(ids)])
        s.add_human_labels([HumanLabel(f"question {pid}", f"answer 0 to {pid}", f"answer 1 to {pid}", "chosen",
                                       "viewer:x") for i, pid in enumerate(ids) if i % 3 == 1])
        s.set_stage("judge", "h", "done", 1.0, {"judge_hash": JH})
    return run


@pytest.mark.parametrize("status", ["unreviewed", "reviewed", None], ids=["unreviewed", "reviewed", "all"])
def test_end_of_a_filtered_queue_is_the_last_page_paged_from_the_top(tmp_path, monkeypatch, status):
    """The pages near a tier's end are read backwards from it (rlaif/store_queue.py queue_page): End, and every page
    read after it, holds what paging from the top gives, which is the review order and the filter as the
    viewer's Python rules state them (Comparison.tier, .reviewed)."""
    from rlaif.viewer.queue import Queue

    run = _mixed_run(tmp_path / "mixed")
    comps = comps_of(run)
    keep = {None: lambda c: True, "reviewed": lambda c: c.reviewed, "unreviewed": lambda c: c.scored and not c.reviewed}
    expected = [c.prompt_id for c in sorted(
        (c for c in comps if keep[status](c)),
        key=lambda c: (c.tier(), c.confidence, -len(c.disagreeing), c.prompt_id, c.chosen_id, c.rejected_id))]
    assert len({c.tier() for c in comps if keep[status](c)}) >= 3 and len(expected) > 10
    top = [c.prompt_id for c in queue_of(run, Filters(status=status))]  # one page of 200: read from the top
    assert top == expected
    monkeypatch.setattr(Queue, "PAGE", 4)
    with open_run_store(run) as s:
        q = build_queue(s, Filters(status=status))
        last = [q[i].prompt_id for i in range(len(q) - 1, (len(q) - 1) // 4 * 4 - 1, -1)][::-1]  # End's page first
        assert last == expected[(len(expected) - 1) // 4 * 4:]
        assert [c.prompt_id for c in q] == expected  # then every page, each tier's back half read backwards
