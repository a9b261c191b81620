"""`rlaif constitution diff`: what changed between two constitutions, principle by principle.

A principle is matched by its ``id``. It is *added*, *removed*, *changed* (and which of its
fields: text, weight, examples, checks, applies_to, tags, revision) or *renamed* (a removed
and an added principle whose content is the same but for the id). The judge's call cache is
keyed by the principle's content hash (rlaif/judges/base.py ``cache_key``), so every added,
changed or renamed principle costs a re-judge; a removed one costs nothing. What a change does
to a run's labels (calls, cost, flipped pairs) is rlaif/rejudge.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlaif.constitution import Constitution, Principle
from rlaif.hashing import content_hash

# The principle fields a diff reports, in this order (``id`` is the match key).
FIELDS = ("text", "weight", "examples", "checks", "applies_to", "tags", "revision")
ADDED, REMOVED, CHANGED, RENAMED, SAME = "added", "removed", "changed", "renamed", "unchanged"


@dataclass(frozen=True)
class PrincipleChange:
    id: str
    status: str  # added | removed | changed | renamed | unchanged
    fields: tuple[str, ...] = ()  # changed: the fields that differ
    old_hash: str | None = None
    new_hash: str | None = None
    old: dict | None = None  # the changed fields' old and new values (changed only)
    new: dict | None = None
    renamed_from: str | None = None

    @property
    def rejudged(self) -> bool:
        """Whether a re-judge under the new constitution pays for this principle's calls."""
        return self.status in (ADDED, CHANGED, RENAMED)

    def to_dict(self) -> dict:
        return {"id": self.id, "status": self.status, "fields": list(self.fields), "old_hash": self.old_hash,
                "new_hash": self.new_hash, "old": self.old, "new": self.new, "renamed_from": self.renamed_from}


@dataclass
class ConstitutionDiff:
    old_name: str
    new_name: str
    old_hash: str
    new_hash: str
    header: dict[str, tuple] = field(default_factory=dict)  # name/version/description/order: (old, new)
    principles: list[PrincipleChange] = field(default_factory=list)

    def of(self, status: str) -> list[PrincipleChange]:
        return [c for c in self.principles if c.status == status]

    @property
    def identical(self) -> bool:
        return self.old_hash == self.new_hash

    def to_dict(self) -> dict:
        counts = {s: len(self.of(s)) for s in (ADDED, REMOVED, CHANGED, RENAMED, SAME)}
        return {"old": {"name": self.old_name, "hash": self.old_hash},
                "new": {"name": self.new_name, "hash": self.new_hash},
                "identical": self.identical, "header": {k: list(v) for k, v in self.header.items()},
                "counts": counts, "principles": [c.to_dict() for c in self.principles]}


def _fields(p: Principle) -> dict:
    return p.model_dump(mode="json", include=set(FIELDS))


def diff_constitutions(old: Constitution, new: Constitution) -> ConstitutionDiff:
    """Principle-level differences, in the new file's order, then the removed ones."""
    d = ConstitutionDiff(old.name, new.name, old.hash, new.hash)
    for key in ("name", "version", "description"):
        a, b = getattr(old, key), getattr(new, key)
        if a != b:
            d.header[key] = (a, b)
    old_by = {p.id: p for p in old.principles}
    new_ids = {p.id for p in new.principles}
    # The order is part of the constitution (and its hash): weighted principle draws (judge.principles:
    # sample, the critique stage) walk the list in order, so a reorder changes which principle is drawn.
    old_order = [p.id for p in old.principles if p.id in new_ids]
    new_order = [p.id for p in new.principles if p.id in old_by]
    if old_order != new_order:
        d.header["order"] = (old_order, new_order)
    removed = [p for p in old.principles if p.id not in new_ids]
    # Removed principles by their content (all but the id), so that a rename is found in one look-up (a scan
    # of every removed principle per added one was quadratic: 15 s for 2,000 replaced principles).
    twins: dict[str, list[Principle]] = {}
    for r in removed:
        twins.setdefault(content_hash(_fields(r)), []).append(r)
    renamed: set[str] = set()
    for p in new.principles:
        o = old_by.get(p.id)
        if o is None:
            bucket = twins.get(content_hash(_fields(p)))
            twin = bucket.pop(0) if bucket else None
            if twin is not None:
                renamed.add(twin.id)
                d.principles.append(PrincipleChange(p.id, RENAMED, (), twin.hash, p.hash, renamed_from=twin.id))
            else:
                d.principles.append(PrincipleChange(p.id, ADDED, (), None, p.hash))
            continue
        a, b = _fields(o), _fields(p)
        changed = tuple(f for f in FIELDS if a[f] != b[f])
        if changed:
            d.principles.append(PrincipleChange(p.id, CHANGED, changed, o.hash, p.hash,
                                                {f: a[f] for f in changed}, {f: b[f] for f in changed}))
        else:
            d.principles.append(PrincipleChange(p.id, SAME, (), o.hash, p.hash))
    d.principles += [PrincipleChange(p.id, REMOVED, (), p.hash, None) for p in removed if p.id not in renamed]
    return d


def _short(v, n: int = 70) -> str:
    """A value from the files, on one line, cut to ``n`` characters and escaped for rich (a principle's text
    may hold ``[/]``, which rich would read as markup)."""
    from rich.markup import escape

    s = v if isinstance(v, str) else ", ".join(map(str, v)) if isinstance(v, list) else repr(v)
    s = " ".join(s.split())
    return escape(s if len(s) <= n else s[:n - 1] + "…")


def render_diff(d: ConstitutionDiff, effects: dict | None = None, console=None) -> None:
    """The diff as rich tables; ``effects`` (rlaif/rejudge.py) adds calls, cost and label changes."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    console.print(f"[bold]{_short(d.old_name)}[/bold] [dim]{d.old_hash}[/dim] → [bold]{_short(d.new_name)}[/bold] "
                  f"[dim]{d.new_hash}[/dim]" + ("  [green](identical)[/green]" if d.identical else ""))
    for key, (a, b) in d.header.items():
        console.print(f"  {key}: [red]{_short(a)}[/red] → [green]{_short(b)}[/green]")
    per = (effects or {}).get("per_principle", {})
    t = Table(title="principles")
    t.add_column("principle", no_wrap=True)
    t.add_column("status")
    t.add_column("fields")
    has_calls = any("calls" in v for v in per.values())
    has_labels = any("flipped" in v for v in per.values())
    if has_calls:
        t.add_column("calls", justify="right")
        t.add_column("USD", justify="right")
    if has_labels:
        for col in ("flipped", "appeared", "gone"):
            t.add_column(col, justify="right")
    if has_calls or has_labels:
        t.caption = ("calls: judge calls a re-judge makes (not in the run's cache); USD: their estimated cost"
                     if has_calls else "") + ("; flipped / appeared / gone: the principle's verdicts on AI pairs "
                                              "in both label sets" if has_labels else "")
    style = {ADDED: "green", REMOVED: "red", CHANGED: "yellow", RENAMED: "cyan", SAME: "dim"}
    for c in d.principles:
        status = c.status + (f" (from {c.renamed_from})" if c.renamed_from else "")
        row = [c.id, f"[{style[c.status]}]{status}[/]", ", ".join(c.fields)]
        e = per.get(c.id, {})
        if has_calls:
            cost = e.get("cost_usd")
            row += [str(e.get("calls", "—")), "—" if cost is None else f"{cost:.4f}"]
        if has_labels:
            row += [str(e.get(k, "—")) for k in ("flipped", "appeared", "disappeared")]
        t.add_row(*row)
    console.print(t)
    for c in d.of(CHANGED):
        for f in c.fields:
            console.print(f"  [yellow]{c.id}[/yellow].{f}: [red]{_short(c.old[f])}[/red] → "
                          f"[green]{_short(c.new[f])}[/green]")
