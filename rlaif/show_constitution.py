"""Rich rendering of a constitution (`rlaif constitution show`). Every string from the file is escaped:
rich would read ``[/]`` or ``[bold]`` in a principle's text as markup (an unmatched tag raised)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from rlaif.constitution import Constitution


def render(c: Constitution, console: Console | None = None) -> None:
    console = console or Console()
    console.print(Panel(f"{escape(c.description)}\n\n[dim]version {escape(c.version)} · hash {c.hash} · "
                        f"{len(c.principles)} principles[/dim]", title=f"[bold]{escape(c.name)}", expand=False))
    for p in c.principles:
        t = Table.grid(padding=(0, 1))
        t.add_column(style="dim", no_wrap=True)
        t.add_column()
        t.add_row("text", escape(p.text))
        t.add_row("weight", f"{p.weight:g}")
        if p.tags:
            t.add_row("tags", escape(", ".join(p.tags)))
        t.add_row("applies to", escape(", ".join(p.applies_to)) if p.applies_to else "all prompts")
        if p.examples:
            for b in p.examples.better:
                t.add_row("[green]better", escape(b))
            for w in p.examples.worse:
                t.add_row("[red]worse", escape(w))
        for ch in p.checks:
            cond = f"matches /{escape(ch.pattern)}/" if ch.type == "regex" else f"{ch.type} {ch.limit}"
            t.add_row("check", f"{cond} → {ch.effect:+g}")
        if p.revision:
            t.add_row("revision", escape(p.revision))
        console.print(Panel(t, title=f"[bold]{p.id}[/bold] [dim]{p.hash}[/dim]", title_align="left"))
