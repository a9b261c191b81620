"""Rich renderables of a comparison, shared by the TUI and `rlaif show`.

Side A is always the AI's chosen text and side B the rejected one, so
"agree" means A and "flip" means B. Every judge field may be missing (the
embedding judge gives no rationale or position check): missing is shown as
"—", never guessed.
"""

from __future__ import annotations

import time

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from rlaif.chat import transcript
from rlaif.records import HumanLabel
from rlaif.viewer.queue import LOW_CONFIDENCE, Comparison
from rlaif.vocab import BOTH_BAD, TIE

DASH = "—"
VERDICT_TEXT = {"A": "A better (agrees with the AI)", "B": "B better (flips the AI)", TIE: "tie",
                BOTH_BAD: "both bad"}


def fmt(v: float | None, digits: int = 3) -> str:
    return DASH if v is None else f"{v:.{digits}f}"


def flags(c: Comparison, low_confidence: float = LOW_CONFIDENCE) -> list[str]:
    """Why a comparison needs review, in queue-order terms."""
    if not c.scored:
        return ["unscored"]
    out = []
    if c.inconsistent:
        out.append("order-inconsistent")
    if c.confidence < low_confidence:
        out.append("low confidence")
    if c.disagreeing:
        out.append("principles disagree")
    return out


def short_flag(c: Comparison, low_confidence: float = LOW_CONFIDENCE) -> str:
    """One word for the queue list."""
    f = flags(c, low_confidence)
    return {"unscored": "unscored", "order-inconsistent": "order", "low confidence": "low",
            "principles disagree": "split"}[f[0]] if f else ""


def short_verdict(c: Comparison, h: HumanLabel | None) -> str:
    if h is None:
        return "·"
    return {"A": "A", "B": "B", TIE: "tie", BOTH_BAD: "bad"}.get(c.verdict_of(h), h.label)


def one_line(text: str, width: int = 60) -> str:
    s = " ".join(text.split())
    return s if len(s) <= width else s[: width - 1] + "…"


def _candidates(c: Comparison) -> Table:
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(ratio=1)
    grid.add_column(ratio=1)
    if c.scored:
        ta, tb, sa, sb = "A · AI chosen ✓", "B · AI rejected", "green", "red"
    else:
        ta, tb, sa, sb = "A", "B (unscored: no AI verdict)", "white", "white"
    grid.add_row(Panel(Text(c.chosen or "(empty)", overflow="fold"), title=ta, title_align="left",
                       border_style=sa, box=box.ROUNDED),
                 Panel(Text(c.rejected or "(empty)", overflow="fold"), title=tb, title_align="left",
                       border_style=sb, box=box.ROUNDED))
    return grid


def _principles(c: Comparison) -> RenderableType:
    if not c.principles:
        return Text("no per-principle verdicts", style="dim")
    t = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False, show_edge=False)
    for col, just in (("principle", "left"), ("picks", "center"), ("P(A)", "right"), ("score A", "right"),
                      ("score B", "right"), ("order ok", "center")):
        t.add_column(col, justify=just, overflow="fold")  # type: ignore[arg-type]
    for p in c.principles:
        pick = (p.pick or DASH) if p.status == "scored" else p.status
        style = "red" if pick == "B" and c.scored else ""
        pc = DASH if p.position_consistent is None else ("yes" if p.position_consistent else "NO")
        t.add_row(p.id, Text(pick, style=style),
                  fmt(p.p_chosen, 2), fmt(p.score_chosen), fmt(p.score_rejected),
                  Text(pc, style="bold red" if pc == "NO" else ""))
    rationales = [Text.assemble((f"{p.id}: ", "bold"), p.rationale) for p in c.principles if p.rationale]
    return Group(t, *rationales) if rationales else t


def _aggregate(c: Comparison) -> Text:
    if not c.scored:
        return Text("AI label: none (unscored; the mix does not use it)", style="yellow")
    pc = c.details.get("position_consistent")
    judge = c.details.get("judge") or {}
    parts = [f"confidence {c.confidence:.3f}", f"gap {fmt(c.details.get('gap'))}",
             str(c.details.get("method") or DASH),
             f"order-consistent {DASH if pc is None else 'yes' if pc else 'NO'}"]
    if judge.get("backend"):
        parts.append(f"judge {judge.get('backend')}:{judge.get('model') or DASH}")
    return Text.assemble(("AI label: A better", "bold green"), " · " + " · ".join(parts))


def _human(c: Comparison, mine: str | None) -> RenderableType:
    if not c.human:
        return Text("human labels: none yet", style="dim")
    t = Text("human labels:", style="bold")
    for h in c.human:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(h.created_at)) if h.created_at else ""
        style = "bold cyan" if h.source == mine else ""
        t.append(f"\n  {h.source}", style=style)
        t.append(f"  {VERDICT_TEXT.get(c.verdict_of(h), h.label)}")
        if h.note:
            t.append(f"  note: {h.note}", style="italic")
        if when:
            t.append(f"  {when}", style="dim")
    return t


def render_comparison(c: Comparison, *, position: str | None = None, mine: str | None = None,
                      pending_note: str | None = None, low_confidence: float = LOW_CONFIDENCE) -> Group:
    """Everything about one comparison: prompt, both answers, per-principle verdicts, labels."""
    head = Text()
    if position:
        head.append(f"{position}  ", style="bold")
    head.append(f"prompt {c.prompt_id}")
    head.append(f" · {c.category or 'no category'}", style="dim")
    for f in flags(c, low_confidence):
        head.append(f"  [{f}]", style="bold yellow" if f != "unscored" else "yellow")
    parts: list[RenderableType] = [
        head,
        Panel(Text(transcript(c.prompt), overflow="fold"), title="prompt", title_align="left", box=box.ROUNDED),
        _candidates(c), _aggregate(c), _principles(c), _human(c, mine),
    ]
    if pending_note:
        parts.append(Text(f"note (saved with your next verdict): {pending_note}", style="italic cyan"))
    return Group(*parts)


def render_panel(c: Comparison, position: str | None = None, low_confidence: float = LOW_CONFIDENCE) -> Panel:
    """A comparison as one bordered block (for `rlaif show`)."""
    return Panel(render_comparison(c, low_confidence=low_confidence), title=position, title_align="left",
                 box=box.HEAVY)
