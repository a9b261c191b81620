"""Rich rendering of a constitution (`rlaif constitution show`)."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from rlaif.constitution import Constitution


def render(c: Constitution, console: Console | None = None) -> None:
    console = console or Console()
    console.print(Panel(f"{c.description}\n\n[dim]version {c.version} · hash {c.hash} · "
                        f"{len(c.principles)} principles[/dim]", title=f"[bold]{c.name}", expand=False))
    for p in c.principles:
        t = Table.grid(padding=(0, 1))
        t.add_column(style="dim", no_wrap=True)
        t.add_column()
        t.add_row("text", p.text)
        t.add_row("weight", f"{p.weight:g}")
        if p.tags:
            t.add_row("tags", ", ".join(p.tags))
        t.add_row("applies to", ", ".join(p.applies_to) if p.applies_to else "all prompts")
        if p.examples:
            for b in p.examples.better:
                t.add_row("[green]better", b)
            for w in p.examples.worse:
                t.add_row("[red]worse", w)
        for ch in p.checks:
            cond = f"matches /{ch.pattern}/" if ch.type == "regex" else f"{ch.type} {ch.limit}"
            t.add_row("check", f"{cond} → {ch.effect:+g}")
        if p.revision:
            t.add_row("revision", p.revision)
        console.print(Panel(t, title=f"[bold]{p.id}[/bold] [dim]{p.hash}[/dim]", title_align="left"))
