"""The spot-check TUI (Textual): a queue of AI-labelled comparisons above
(or, on wide terminals, beside) the selected comparison, a status bar and a
footer of keys. Verdicts go to the store the moment a key is pressed (kept and
retried if another process holds the store: rlaif/viewer/writes.py).

Every key is an App binding; the queue table and the detail pane take no
focus, so the keys mean the same thing everywhere except in the one-line
input that `/` (search) and `n` (note) open.
"""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container, VerticalScroll
from textual.widgets import DataTable, Footer, Input, Static

from rlaif.chat import transcript
from rlaif.evaluate import wilson
from rlaif.store import Store
from rlaif.viewer import verdicts as V
from rlaif.viewer.drafts import Drafts
from rlaif.viewer.queue import LOW_CONFIDENCE, Comparison, Filters, Queue, agreement_of, refresh
from rlaif.viewer.render import one_line, render_comparison, short_flag, short_verdict
from rlaif.viewer.writes import KeepsWrites
from rlaif.vocab import viewer_source

WIDE = 140  # columns from which the queue sits beside the detail
WINDOW = 100  # queue rows in the table at a time, around the cursor (the queue itself is paged from SQL)


class ViewerApp(KeepsWrites, App[None]):
    """``ViewerApp(store, judge_hash, annotator).run()``; the store stays open (and is not closed) here."""

    TITLE = "rlaif view"
    ENABLE_COMMAND_PALETTE = False
    AUTO_FOCUS = None  # keys go to the App bindings until / or n opens the input
    CSS = """
    #status { height: 1; background: $primary-background; color: $text; padding: 0 1; }
    #body { height: 1fr; layout: vertical; }
    #queue { height: 8; border-bottom: solid $primary; overflow-x: hidden; }
    #detail { height: 1fr; padding: 0 1; }
    #ask { dock: bottom; display: none; height: 3; }
    #ask.shown { display: block; }
    Screen.wide #body { layout: horizontal; }
    Screen.wide #queue { height: 1fr; width: 60; border-bottom: none; border-right: solid $primary; }
    """
    BINDINGS = [
        Binding("a", "verdict('agree')", "agree"),
        Binding("f", "verdict('flip')", "flip"),
        Binding("t", "verdict('tie')", "tie"),
        Binding("b", "verdict('both_bad')", "both bad"),
        Binding("s", "skip", "skip"),
        Binding("n", "note", "note"),
        Binding("u", "undo", "undo"),
        Binding("slash", "search", "search", key_display="/"),
        Binding("q", "quit", "quit"),
        Binding("down,j", "move(1)", "next", show=False),
        Binding("up,k", "move(-1)", "previous", show=False),
        Binding("home", "jump(0)", "first", show=False),
        Binding("end", "jump(-1)", "last", show=False),
        Binding("pagedown,space", "scroll_detail(1)", "scroll down", show=False, priority=True),
        Binding("pageup", "scroll_detail(-1)", "scroll up", show=False, priority=True),
        Binding("r", "reload", "reload", show=False),
        Binding("escape", "close_input", "cancel", show=False),
    ]

    def __init__(self, store: Store, judge_hash: str, annotator: str, *,
                 filters: Filters | None = None, order: str = "review", seed: int = 0,
                 low_confidence: float = LOW_CONFIDENCE, queue: Queue | None = None):
        super().__init__()
        self.store = store
        self.judge_hash = judge_hash
        self.annotator = annotator
        self.source = viewer_source(annotator)
        self.filters = filters or Filters()
        self.order_name, self.seed, self.low = order, seed, low_confidence
        self.queue: Queue | None = queue  # the first screen shows it; reloads and new searches open their own
        self.counts = (0, 0, 0)  # reviewed, AI agrees with my verdicts, my verdicts (kept current)
        self.window = range(0)  # queue positions shown in the table
        self.cursor = 0
        self.drafts: Drafts[V.UndoEntry] = Drafts()
        self.ask_mode: str | None = None
        self.start_writes(store)

    # ------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with Container(id="body"):
            table = DataTable(id="queue", cursor_type="row", zebra_stripes=False)
            table.can_focus = False
            yield table
            with VerticalScroll(id="detail") as detail:
                detail.can_focus = False
                yield Static(id="detail-body")
        yield Input(id="ask")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#queue", DataTable)
        for label, key, width in (("#", "n", 4), ("why", "why", 8), ("conf", "conf", 5), ("you", "you", 4),
                                  ("prompt", "prompt", None)):
            table.add_column(label, key=key, width=width)
        self._rebuild(fresh=False)  # the queue `rlaif view` opened, if it passed one
        self._layout_for(self.size.width)
        self.retry_every()

    def on_resize(self, event: events.Resize) -> None:
        self._layout_for(event.size.width)

    def _layout_for(self, width: int) -> None:
        self.screen.set_class(width >= WIDE, "wide")

    # ------------------------------------------------------------ queue and detail
    def _rebuild(self, keep: Comparison | None = None, fresh: bool = True) -> None:
        if fresh or self.queue is None:
            self.queue = Queue(self.store, self.judge_hash, self.filters, self.order_name, self.seed, self.low)
        self.counts = self.queue.review_counts(self.source)
        pos = self.queue.position(keep)
        self.cursor = pos if pos is not None else 0
        self.window = range(0)
        self._show()

    def _fill_window(self) -> None:
        """The table shows WINDOW rows around the cursor; moving past them shows the next ones."""
        start = max(0, min(self.cursor - WINDOW // 2, len(self.queue) - WINDOW))
        self.window = range(start, min(len(self.queue), start + WINDOW))
        table = self.query_one("#queue", DataTable)
        table.clear()
        for i in self.window:
            table.add_row(*self._cells(i, self.queue[i]), key=str(i))

    def _cells(self, i: int, c: Comparison) -> tuple[str | Text, ...]:
        conf = f"{c.confidence:.2f}" if c.scored else "—"
        # The prompt as Text: DataTable reads a str cell as markup ('[/INST]' raised MarkupError)
        return (str(i + 1), short_flag(c, self.low), conf, self._you(c),
                Text(one_line(transcript(c.prompt), 200)))

    def _you(self, c: Comparison) -> str:
        """My verdict on ``c`` as the queue shows it: "…" while a write about it is kept (the store is busy)."""
        return "…" if self.writes and c.key in self.writes.keys() else short_verdict(c, c.label_from(self.source))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool:
        """While the note or search box is open, keys it does not use (↓ ↑ PgDn) do nothing: they moved the
        queue, and the note went to another comparison."""
        return self.ask_mode is None or action in ("close_input", "quit")

    @property
    def current(self) -> Comparison | None:
        return self.queue[self.cursor] if self.queue else None

    def _tally(self, c: Comparison, sign: int) -> None:
        """Add (1) or take out (-1) ``c``'s part of the status counts."""
        reviewed, k, n = self.counts
        ck, cn = agreement_of(c, self.source)
        self.counts = (reviewed + sign * c.reviewed, k + sign * ck, n + sign * cn)

    def _show(self, scroll: bool = True) -> None:
        body = self.query_one("#detail-body", Static)
        c = self.current
        if c is None:
            body.update(Text(f"No comparisons match (filters: {self.filters.describe()}). Press / to change the search."))
        else:
            if self.cursor not in self.window:
                self._fill_window()
            self.query_one("#queue", DataTable).move_cursor(row=self.cursor - self.window.start)
            body.update(render_comparison(c, position=f"{self.cursor + 1}/{len(self.queue)}", mine=self.source,
                                          pending_note=self.drafts.pending(c.key), low_confidence=self.low))
            if scroll:
                self.query_one("#detail", VerticalScroll).scroll_home(animate=False)
        self._status()

    def _status(self) -> None:
        reviewed, k, n = self.counts
        ci = wilson(k, n)
        agree = (f"AI agrees {k}/{n} {k / n:.0%} (95% CI {ci[0]:.0%}–{ci[1]:.0%})" if ci
                 else "AI agreement: no verdicts yet")
        extra = f" │ /{self.filters.search}" if self.filters.search else ""
        self.query_one("#status", Static).update(  # one line high: no layout pass; Text: the search is not markup
            Text(f"{reviewed}/{len(self.queue)} reviewed │ {agree} │ {self.order_name}{extra} │ {self.annotator}"
                 + self.writes_waiting()),
            layout=False)

    def _update_row(self, c: Comparison) -> None:
        for i in self.window:
            if self.queue[i] is c:
                table = self.query_one("#queue", DataTable)
                table.update_cell(str(i), "you", self._you(c))

    # ------------------------------------------------------------ actions
    def action_move(self, step: int) -> None:
        if self.queue:
            self.cursor = max(0, min(len(self.queue) - 1, self.cursor + step))
            self._show()

    def action_jump(self, where: int) -> None:
        if self.queue:
            self.cursor = where % len(self.queue)
            self._show()

    def action_scroll_detail(self, direction: int) -> None:
        if self.ask_mode is not None:
            return
        detail = self.query_one("#detail", VerticalScroll)
        (detail.scroll_page_down if direction > 0 else detail.scroll_page_up)(animate=False)

    def action_verdict(self, verdict: str) -> None:
        c = self.current
        if c is None:
            return
        note = self.drafts.take(c.key)
        self.write(V.verdict_write(c, verdict, self.annotator, note), lambda entry: self._wrote(entry, [c]), c.key)
        if self.cursor < len(self.queue) - 1:
            self.cursor += 1
        else:
            self.notify("end of the queue", timeout=2)
        self._show()

    def _wrote(self, entry: V.UndoEntry | None, comps: list[Comparison], undone: bool = False) -> None:
        """A write went in: the comparisons it changed are read again and their part of the counts redone."""
        if entry is not None and not undone:
            self.drafts.wrote(entry)
        for c in comps:
            self._tally(c, -1)
        refresh(self.store, comps)
        for c in comps:
            self._tally(c, 1)
            self._update_row(c)

    def writes_changed(self) -> None:
        if self.queue:
            self._fill_window()  # the rows of kept writes show "…", and their verdicts once stored
        self._show(scroll=False)

    def action_skip(self) -> None:
        self.action_move(1)

    def action_undo(self) -> None:
        key = self.undo_newest(self.drafts.undo_stack, V.undo_write, self._undone)
        if key is None:
            return
        hit = [c for c in self.queue.loaded() if c.key == key]
        pos = self.queue.position(hit[0]) if hit else None
        if pos is not None:
            self.cursor = pos
        self._show()

    def _undone(self, entry: V.UndoEntry) -> None:
        self._wrote(entry, [c for c in self.queue.loaded() if c.key == entry.key], undone=True)
        self.notify(f"undid {entry.what.replace('_', ' ')}", timeout=2)

    def action_reload(self) -> None:
        """Re-read the human labels (another reviewer or an import may have added some)."""
        self._rebuild(self.current)
        self.notify("labels reloaded", timeout=2)

    def _open_input(self, mode: str, value: str, placeholder: str) -> None:
        ask = self.query_one("#ask", Input)
        self.ask_mode = mode
        ask.placeholder = placeholder
        ask.value = value
        ask.add_class("shown")
        ask.focus()

    def action_search(self) -> None:
        self._open_input("search", self.filters.search or "", "search prompt, answers, rationales, notes (Enter; empty clears)")

    def action_note(self) -> None:
        c = self.current
        if c is None:
            return
        mine = c.label_from(self.source)
        value = self.drafts.editing(c.key, mine.note if mine else None)
        self._open_input("note", value, "note on this comparison (Enter saves, Esc cancels)")

    def action_close_input(self) -> None:
        ask = self.query_one("#ask", Input)
        ask.remove_class("shown")
        self.ask_mode = None
        self.set_focus(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        mode, text = self.ask_mode, event.value.strip()
        self.action_close_input()
        if mode == "search":
            keep = self.current
            self.filters.search = text or None
            self._rebuild(keep)
        elif mode == "note" and (c := self.current) is not None:
            self.write(V.note_write(c, self.annotator, text), lambda entry: self._noted(c, text, entry), c.key)
            self._show()

    def _noted(self, c: Comparison, text: str, entry: V.UndoEntry | None) -> None:
        if self.drafts.noted(c.key, text, entry):
            refresh(self.store, [c])
            self.notify("note saved", timeout=2)
        else:
            self.notify("note kept: it is saved with your verdict on this comparison", timeout=2)
