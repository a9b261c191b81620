"""The viewer's rating mode (Textual): one response at a time, keys store thumbs or a 1-5 rating
(rlaif/viewer/rating.py). The AI's verdicts are not shown, so the ratings stay independent of them
(`rlaif labels stats` compares the two afterwards)."""

from __future__ import annotations

from collections.abc import Iterable

from rich import box
from rich.console import Group
from rich.panel import Panel
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Input, Static

from rlaif.chat import transcript
from rlaif.store import Store
from rlaif.viewer import rating as R
from rlaif.viewer.drafts import Drafts
from rlaif.viewer.writes import KeepsWrites
from rlaif.vocab import viewer_source


class RateApp(KeepsWrites, App[None]):
    """``RateApp(store, responses, annotator).run()``; the store stays open (and is not closed) here."""

    TITLE = "rlaif view --rate"
    ENABLE_COMMAND_PALETTE = False
    AUTO_FOCUS = None
    CSS = """
    #status { height: 1; background: $primary-background; color: $text; padding: 0 1; }
    #detail { height: 1fr; padding: 0 1; }
    #ask { dock: bottom; display: none; height: 3; }
    #ask.shown { display: block; }
    """
    BINDINGS = [
        Binding("plus,y", "rate('up')", "thumbs up", key_display="+"),
        Binding("minus,x", "rate('down')", "thumbs down", key_display="-"),
        *[Binding(str(i), f"rate('{i}')", f"rate {i}", show=i in (1, R.RATING_SCALE)) for i in range(1, R.RATING_SCALE + 1)],
        Binding("n", "comment", "comment"),
        Binding("s,down,j", "move(1)", "skip"),
        Binding("up,k", "move(-1)", "previous", show=False),
        Binding("u", "undo", "undo"),
        Binding("q", "quit", "quit"),
        Binding("pagedown,space", "scroll_detail(1)", "scroll down", show=False, priority=True),
        Binding("pageup", "scroll_detail(-1)", "scroll up", show=False, priority=True),
        Binding("escape", "close_input", "cancel", show=False),
    ]

    def __init__(self, store: Store, responses: Iterable[R.Response], annotator: str):
        super().__init__()
        self.store, self.annotator = store, annotator
        self.responses = responses if isinstance(responses, R.Responses) else R.Responses(responses)
        self.source = viewer_source(annotator)
        self.cursor = 0
        self.drafts: Drafts[R.RateUndo] = Drafts()
        self.asking = False
        self.start_writes(store)

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with VerticalScroll(id="detail") as detail:
            detail.can_focus = False
            yield Static(id="detail-body")
        yield Input(id="ask")
        yield Footer()

    def on_mount(self) -> None:
        self._show()
        self.retry_every()

    def writes_changed(self) -> None:
        self._show(scroll=False)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool:
        """While the comment box is open, keys it does not use (↓ ↑ PgDn) do nothing: they moved to another
        response, which then got the comment."""
        return not (self.asking and action in ("rate", "move", "undo", "comment", "scroll_detail"))

    @property
    def current(self) -> R.Response | None:
        return self.responses[self.cursor] if self.responses.has(self.cursor) else None

    def _mine(self, r: R.Response):
        return self.store.feedback_from(r.key, self.source)

    def _show(self, scroll: bool = True) -> None:
        body = self.query_one("#detail-body", Static)
        r = self.current
        if r is None:
            body.update("No responses to rate.")
        else:
            self.responses.has(self.cursor + 1)  # whether there is a next one shows in the count
            head = Text(f"{self.cursor + 1}/{self.responses.described()}  prompt {r.prompt_id}", style="bold")
            head.append(f" · {r.category or 'no category'}", style="dim")
            parts = [head, Panel(Text(transcript(r.prompt), overflow="fold"), title="prompt", title_align="left",
                                 box=box.ROUNDED),
                     Panel(Text(r.text, overflow="fold"), title="response", title_align="left", box=box.HEAVY),
                     Text(f"your verdict: {R.describe(self._mine(r))}"
                          + (" · a newer one is not saved yet (the store is busy)" if r.key in self.writes.keys() else ""),
                          style="bold cyan")]
            if (held := self.drafts.pending(r.key)) is not None:
                parts.append(Text(f"comment (saved with your next verdict): {held}",
                                  style="italic cyan"))
            body.update(Group(*parts))
            if scroll:
                self.query_one("#detail", VerticalScroll).scroll_home(animate=False)
        rated = self.store.feedback_count(self.source, self.responses.read_keys())  # of those read so far
        keys = f"+ up  - down  1-{R.RATING_SCALE} rating  n comment"
        self.query_one("#status", Static).update(  # Text: an annotator such as '[/]' is not markup
            Text(f"{rated}/{self.responses.described()} rated │ {keys} │ {self.annotator}{self.writes_waiting()}"))

    def action_rate(self, verdict: str) -> None:
        r = self.current
        if r is None:
            return
        comment = self.drafts.take(r.key)
        self.write(R.feedback_write(r, verdict, self.annotator, comment), self.drafts.wrote, r.key)
        if self.responses.has(self.cursor + 1):
            self.cursor += 1
        else:
            self.notify("end of the queue", timeout=2)
        self._show()

    def action_move(self, step: int) -> None:
        if self.responses.has(self.cursor + step):
            self.cursor += step
        elif step < 0:
            self.cursor = 0
        self._show()

    def action_undo(self) -> None:
        key = self.undo_newest(self.drafts.undo_stack, R.undo_write, self._undone)
        if key is None:
            return
        at = self.responses.index(key)
        if at is not None:
            self.cursor = at
        self._show()

    def _undone(self, entry: R.RateUndo) -> None:
        self.notify(f"undid {entry.what}", timeout=2)

    def action_scroll_detail(self, direction: int) -> None:
        if not self.asking:
            detail = self.query_one("#detail", VerticalScroll)
            (detail.scroll_page_down if direction > 0 else detail.scroll_page_up)(animate=False)

    def action_comment(self) -> None:
        r = self.current
        if r is None:
            return
        mine = self._mine(r)
        ask = self.query_one("#ask", Input)
        ask.placeholder = "comment on this response (Enter saves, Esc cancels)"
        ask.value = self.drafts.editing(r.key, mine.comment if mine else None)
        ask.add_class("shown")
        self.asking = True
        ask.focus()

    def action_close_input(self) -> None:
        self.query_one("#ask", Input).remove_class("shown")
        self.asking = False
        self.set_focus(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        self.action_close_input()
        r = self.current
        if r is None:
            return
        self.write(R.comment_write(r, self.annotator, text), lambda entry: self._commented(r, text, entry), r.key)
        self._show()

    def _commented(self, r: R.Response, text: str, entry: R.RateUndo | None) -> None:
        if self.drafts.noted(r.key, text, entry):
            self.notify("comment saved", timeout=2)
        else:
            self.notify("comment kept: it is saved with your verdict on this response", timeout=2)
