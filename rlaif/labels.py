"""Human labels of a run: statistics, export and import (`rlaif labels ...`).

Stats compare every human preference label that falls on an AI comparison
of the latest judge run (same ``pair_key``) with the AI's label: overall,
per principle (that principle's ``p_chosen > 0.5`` means it picks the AI's
chosen text) and per label source. Each human label counts once (two
annotators on one comparison are two items); ties and "both bad" are
counted but not scored. Kappa needs an orientation that does not depend on
the AI: a comparison's "A" is its two texts' first in sorted order (as in
``pair_key``).

Single-response feedback (thumbs, ratings, rankings) is compared with the AI too
(``feedback_stats``): do the AI and each principle pick the text people rated or
ranked higher, and is a thumbs-down response the one the AI rejected (a thumbs-up
the one it chose), with Wilson intervals.

Export writes human labels, AI labels, or ``all`` (human labels plus the AI
pairs no pairwise human label covers, as the mix does; single-response feedback is
not applied to them) as JSONL (every field), TRL JSONL ({prompt, chosen, rejected}; preferences only) or Parquet (the
JSONL columns). Import reads TRL or A/B JSONL (``rlaif.records``) or the
JSONL/Parquet written by export, keeps ``label``/``annotator``/``note``
when present, and stores each label with source ``import:FILE:LINE``
(re-importing a file replaces its labels). Exports mark provenance (``kind``
and ``source``; TRL rows carry ``rlaif_source``) and import refuses any record
marked AI. Imported labels train but never enter the held-out eval split
unless imported with ``--human`` (source ``import-human:FILE:LINE``).
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlaif import safeio
from rlaif.conversations import trl_preference_row
from rlaif.errors import RlaifError
from rlaif.evaluate import agreement, wilson
from rlaif.outputs import check_target
from rlaif.records import Feedback, HumanLabel, feedback_key, iter_label_file
from rlaif.store import Store
from rlaif.vocab import (
    AI,
    HUMAN,
    LABELS,
    PREFERENCE,
    PROVENANCE,
    ai_source,
    import_name,
    import_source,
    is_ai_record,
    source_group,
)

if TYPE_CHECKING:  # the AI comparisons are read by the viewer's queue
    from rlaif.viewer.queue import Comparison

FORMATS = ("jsonl", "trl", "parquet")
SOURCES = (HUMAN, AI, "all")
PARQUET_ROWS = 50_000  # rows per Parquet row group (bounds the export's memory)
COLUMNS = ("kind", "prompt", "chosen", "rejected", "label", "source", "annotator", "note", "pair_key",
           "confidence", "prompt_id", "status", "details", "created_at")


# ---------------------------------------------------------------- stats
def _orient(c: Comparison, side: str) -> str:
    """A side of ``c`` ("A" = AI chosen, "B" = AI rejected) in content order; ties pass through."""
    if side not in ("A", "B"):
        return side
    chosen_first = c.chosen.strip() <= c.rejected.strip()
    return "A" if (side == "A") == chosen_first else "B"


def label_stats(store: Store, judge_hash: str) -> dict[str, Any]:
    """Counts by source and label, AI-human agreement overall, per principle and per source.

    Streamed: the labels are counted from a cursor, and only the AI pairs that carry a human label are
    read: a run of a million comparisons with a few thousand labels reads those few thousand. With
    single-response feedback in the run, every AI pair is read once more (streamed) to find the ones
    whose texts the feedback is about."""
    from rlaif.viewer.queue import Comparison, refresh

    by_source: Counter = Counter()
    by_label: Counter = Counter()
    for _, h in store.iter_human_labels():
        by_source[source_group(h.source)] += 1
        by_label[h.label] += 1
    ai_total, ai_scored = store.ai_pair_counts(judge_hash)
    human, judge = [], []
    per_p: dict[str, tuple[list[str], list[str]]] = {}
    per_s: dict[str, tuple[list[str], list[str]]] = {}
    matched = on_unscored = 0
    seen: set[str] = set()
    batch: list[Comparison] = []

    def tally(comps: list[Comparison]) -> None:
        nonlocal matched, on_unscored
        refresh(store, comps)
        for c in comps:
            if not c.scored:
                on_unscored += len(c.human)
                continue
            for h in c.human:
                matched += 1
                hv, jv = _orient(c, c.verdict_of(h)), _orient(c, "A")
                human.append(hv)
                judge.append(jv)
                s = per_s.setdefault(source_group(h.source), ([], []))
                s[0].append(hv)
                s[1].append(jv)
                for p in c.principles:
                    if p.status == "scored" and p.pick is not None:
                        t = per_p.setdefault(p.id, ([], []))
                        t[0].append(hv)
                        t[1].append(_orient(c, p.pick))

    for d in store.labelled_ai_pairs(judge_hash):
        c = Comparison.from_record(d)
        if c.key in seen:  # two AI pairs with the same texts: the labels count once
            continue
        seen.add(c.key)
        batch.append(c)
        if len(batch) >= 500:
            tally(batch)
            batch = []
    tally(batch)
    unmatched = sum(by_source.values()) - matched - on_unscored
    overall = agreement(human, judge)
    k = round((overall["accuracy"] or 0) * overall["n"])
    overall["ci95"] = wilson(k, overall["n"])
    feedback = store.feedback()
    return {"feedback": feedback_stats(feedback, _feedback_comparisons(store, judge_hash, feedback))} | {
        "ai_pairs": ai_total, "ai_scored": ai_scored,
        "human_labels": sum(by_source.values()), "by_source": dict(sorted(by_source.items())),
        "by_label": dict(sorted(by_label.items())), "on_ai_pairs": matched, "not_on_ai_pairs": unmatched,
        "on_unscored_ai_pairs": on_unscored, "overall": overall,
        "per_principle": {pid: agreement(*v) for pid, v in sorted(per_p.items())},
        "per_source": {s: agreement(*v) for s, v in sorted(per_s.items())},
    }


def _feedback_comparisons(store: Store, judge_hash: str, feedback: list[Feedback]) -> Iterator[Comparison]:
    """The AI comparisons with a text that single-response feedback is about (none read without feedback)."""
    from rlaif.viewer.queue import Comparison

    if not feedback:
        return
    about = {feedback_key(f.prompt, f.completion) for f in feedback}
    for d in store.iter_ai_pairs(judge_hash, raw=True):
        if feedback_key(d["prompt"], d["chosen"]) in about or feedback_key(d["prompt"], d["rejected"]) in about:
            yield Comparison.from_record(d | {"details": json.loads(d["details"])})


def _rate(k: int, n: int) -> dict[str, Any]:
    return {"agreement": k / n if n else None, "n": n, "ci95": wilson(k, n)}


def feedback_stats(feedback: list[Feedback], comps: Iterable[Comparison]) -> dict[str, Any]:
    """AI-human agreement for single-response feedback, overall and per principle, with Wilson intervals.

    Ratings and rankings: on every scored AI comparison whose two texts a rating group or a ranking
    orders (``rlaif.feedback.goodness_index``: the groups the mix pairs within, ties left out), does the
    AI (or a principle) pick the text people rated higher? Thumbs: for every response with a net thumbs
    verdict in a scored AI comparison, is a thumbs-down response the one the AI rejected there ("ranked
    low") and a thumbs-up the one it chose?
    """
    from rlaif.feedback import goodness_index, thumbs_index

    goodness = goodness_index([f for f in feedback if f.graded])
    thumbs = thumbs_index(feedback)

    def human_prefers_chosen(c: Comparison) -> bool | None:
        """Whether people put c's chosen text above its rejected one in a group holding both (the last such
        group, as the mix's pairs; None: no group orders the two)."""
        a = goodness.get(feedback_key(c.prompt, c.chosen))
        b = goodness.get(feedback_key(c.prompt, c.rejected))
        if not a or not b:
            return None
        order = [a[g] > b[g] for g in sorted(a.keys() & b.keys()) if a[g] != b[g]]
        return order[-1] if order else None

    g_all, g_per = [0, 0], {}
    t_all, t_per, down, up = [0, 0], {}, [0, 0], [0, 0]

    def count(acc: list[int], ok: bool) -> None:
        acc[0] += ok
        acc[1] += 1

    for c in comps:
        if not c.scored:
            continue
        picks = [(p.id, p.pick) for p in c.principles if p.status == "scored" and p.pick in ("A", "B")]
        human_a = human_prefers_chosen(c)
        if human_a is not None:  # people ordered these two texts
            count(g_all, human_a)
            for pid, pick in picks:
                count(g_per.setdefault(pid, [0, 0]), (pick == "A") == human_a)
        for side, text in (("A", c.chosen), ("B", c.rejected)):
            net = thumbs.get(feedback_key(c.prompt, text))
            if net is None or net == 0.5:
                continue  # no thumbs, or as many ups as downs
            good = net > 0.5
            count(t_all, good == (side == "A"))
            count(up if good else down, good == (side == "A"))
            for pid, pick in picks:
                count(t_per.setdefault(pid, [0, 0]), good == (pick == side))
    return {
        "by_kind": dict(sorted(Counter(f.kind for f in feedback).items())),
        "by_source": dict(sorted(Counter(source_group(f.source) for f in feedback).items())),
        "with_comment": sum(f.comment is not None for f in feedback),
        "graded": _rate(*g_all) | {"per_principle": {pid: _rate(*v) for pid, v in sorted(g_per.items())}},
        "thumbs": _rate(*t_all) | {"per_principle": {pid: _rate(*v) for pid, v in sorted(t_per.items())},
                                   "down_ranked_low": _rate(*down), "up_ranked_high": _rate(*up)},
    }


def _print_feedback(fs: dict[str, Any], console) -> None:
    from rich.table import Table

    def cell(r: dict) -> str:
        if r["agreement"] is None:
            return "—"
        return f"{r['agreement']:.3f} (95% CI {r['ci95'][0]:.3f}–{r['ci95'][1]:.3f})"

    console.print("human feedback " + ", ".join(f"{k} {v}" for k, v in fs["by_kind"].items())
                  + f" ({fs['with_comment']} with a comment) · by source: "
                  + ", ".join(f"{k} {v}" for k, v in fs["by_source"].items()), markup=False)  # names are text
    t = Table(title="AI-human agreement on single-response feedback")
    for col in ("scope", "agreement", "n"):
        t.add_column(col)
    g, th = fs["graded"], fs["thumbs"]
    t.add_row("ratings/rankings: AI picks the higher-rated text", cell(g), str(g["n"]))
    for pid, a in g["per_principle"].items():
        t.add_row(f"  principle {pid}", cell(a), str(a["n"]))
    t.add_row("thumbs: AI chose the up, rejected the down", cell(th), str(th["n"]))
    for pid, a in th["per_principle"].items():
        t.add_row(f"  principle {pid}", cell(a), str(a["n"]))
    t.add_row("  of these: thumbs-down responses the AI rejected", cell(th["down_ranked_low"]),
              str(th["down_ranked_low"]["n"]))
    t.add_row("  of these: thumbs-up responses the AI chose", cell(th["up_ranked_high"]), str(th["up_ranked_high"]["n"]))
    console.print(t)


def print_stats(st: dict[str, Any], console) -> None:
    from rich.table import Table
    from rich.text import Text

    f = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    console.print(f"AI pairs {st['ai_pairs']} ({st['ai_scored']} scored) · human labels {st['human_labels']} "
                  f"({st['on_ai_pairs']} on scored AI pairs, {st['on_unscored_ai_pairs']} on unscored, "
                  f"{st['not_on_ai_pairs']} on other comparisons) · "
                  + ", ".join(f"{k} {v}" for k, v in st["by_label"].items()))
    t = Table(title="human labels by source")
    for col in ("source", "labels", "AI agreement", "n (preferences on AI pairs)"):
        t.add_column(col)
    for s, n in st["by_source"].items():
        a = st["per_source"].get(s, {"accuracy": None, "n": 0})
        t.add_row(Text(s), str(n), f(a["accuracy"]), str(a["n"]))  # Text: a source such as viewer:[/] is not markup
    console.print(t)
    t = Table(title="AI-human agreement (human ties and both-bad not scored)")
    for col in ("scope", "agreement", "Cohen's kappa", "n"):
        t.add_column(col)
    o = st["overall"]
    ci = f" (95% CI {o['ci95'][0]:.3f}–{o['ci95'][1]:.3f})" if o["ci95"] else ""
    t.add_row("aggregate label", f(o["accuracy"]) + ci, f(o["kappa"]), str(o["n"]))
    for pid, a in st["per_principle"].items():
        t.add_row(f"principle {pid}", f(a["accuracy"]), f(a["kappa"]), str(a["n"]))
    console.print(t)
    if st["feedback"]["by_kind"]:
        _print_feedback(st["feedback"], console)


def run_system_prompt(run_dir: str | Path) -> str | None:
    """The ``data.system_prompt`` the run directory was made with (its manifest's config), which its file labels,
    prompts and AI pairs carry: imported labels get it too, or they would never meet the run's pairs."""
    from rlaif.layout import RunLayout

    path = RunLayout(Path(run_dir)).manifest
    if not path.is_file():
        return None  # no stage has finished a command here yet: nothing to match
    try:
        data = (json.loads(path.read_text(encoding="utf-8")).get("config") or {}).get("data") or {}
    except (OSError, ValueError, AttributeError) as e:
        raise RlaifError(f"{path}: unreadable ({type(e).__name__}); re-run `rlaif run CONFIG` to rewrite it") from None
    return data.get("system_prompt") or None


# ---------------------------------------------------------------- export
def export_records(store: Store, judge_hash: str | None, source: str) -> Iterator[dict[str, Any]]:
    """Rows with COLUMNS, streamed from the store; ``judge_hash`` (the AI comparisons' judge run) is
    needed for ``ai`` and ``all``."""
    if source not in SOURCES:
        raise RlaifError(f"--source must be one of {', '.join(SOURCES)}, got {source!r}")
    return _export_rows(store, judge_hash, source)


def _export_rows(store: Store, judge_hash: str | None, source: str) -> Iterator[dict[str, Any]]:
    if source in (HUMAN, "all"):
        for key, h in store.iter_human_labels():
            yield {"kind": HUMAN, "prompt": h.prompt, "chosen": h.chosen, "rejected": h.rejected,
                   "label": h.label, "source": h.source, "annotator": h.annotator, "note": h.note,
                   "pair_key": key, "confidence": None, "prompt_id": None, "status": None,
                   "details": None, "created_at": h.created_at}
    if source in (AI, "all") and judge_hash is not None:
        # "all": a human label takes the place of the AI pair on the same comparison, as in the mix.
        # Details pass through as stored (JSON text); the judge hash covers the judge's identity,
        # so every pair of the run names the same backend: read once.
        label_source = None
        for d in store.iter_ai_pairs(judge_hash, unlabelled_only=source == "all", raw=True):
            if label_source is None:
                label_source = ai_source((json.loads(d["details"]).get("judge") or {}).get("backend"))
            yield {"kind": AI, "prompt": d["prompt"], "chosen": d["chosen"], "rejected": d["rejected"],
                   "label": PREFERENCE, "source": label_source, "annotator": None, "note": None,
                   "pair_key": d["pair_key"], "confidence": d["confidence"], "prompt_id": d["prompt_id"],
                   "status": d["status"], "details": d["details"], "created_at": None}


def write_export(rows: Iterable[dict[str, Any]], fmt: str, out: str | Path,
                 feedback: list[dict[str, Any]] = ()) -> tuple[int, dict[str, int]]:
    """Write ``rows`` as ``fmt``; returns (written, {reason: rows left out}).

    Rows with an empty prompt or answer are left out (label files need non-empty text, so
    `labels import` could not read them back); TRL also leaves out ties, both-bad and unscored.
    ``feedback`` (``rlaif.feedback.feedback_records``: thumbs, ratings, rankings) is written by
    ``jsonl`` only, in the formats labels files hold; TRL and Parquet hold pairs and leave it out.
    """
    if fmt not in FORMATS:
        raise RlaifError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    path = Path(out)
    check_target(path)
    skipped: dict[str, int] = {}
    if feedback and fmt != "jsonl":
        skipped[f"single-response feedback ({fmt} holds pairs; export --format jsonl)"] = len(feedback)

    def leave_out(reason: str) -> bool:
        skipped[reason] = skipped.get(reason, 0) + 1
        return False

    rows = (r for r in rows if all(str(r[k] or "").strip() for k in ("prompt", "chosen", "rejected"))
            or leave_out("empty text"))
    if fmt == "trl":
        rows = (trl_preference_row(r["prompt"], r["chosen"], r["rejected"]) | {PROVENANCE: r["kind"]}
                for r in rows  # conversational, with who labelled it
                if (r["label"] == PREFERENCE and r["status"] in (None, "scored"))
                or leave_out("tie, both-bad or unscored (TRL holds preferences only)"))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    written = 0
    try:  # streamed: rows are written as the store yields them (Parquet in row groups)
        if fmt == "parquet":
            os.close(fd)
            pa, pq = _pyarrow()
            schema = _schema(pa)
            with pq.ParquetWriter(tmp, schema) as writer:
                for chunk in _chunks(rows, PARQUET_ROWS):
                    writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                    written += len(chunk)
        else:
            with open(fd, "w", encoding="utf-8") as fh:
                for r in itertools.chain(rows, feedback if fmt == "jsonl" else ()):
                    fh.write(json.dumps(r, ensure_ascii=False) + "\n")
                    written += 1
        os.chmod(tmp, 0o644)
        tmp.replace(path)  # the target appears whole or not at all
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise RlaifError(f"{path}: could not write the export ({e.strerror or e}); free space or pick another -o") \
            from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written, skipped


def _chunks(rows: Iterable[dict[str, Any]], n: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for r in rows:
        chunk.append(r)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow comes with datasets
        raise RlaifError("Parquet needs pyarrow: pip install pyarrow") from None
    return pa, pq


def _schema(pa):
    types = {"confidence": pa.float64(), "created_at": pa.float64()}
    return pa.schema([(c, types.get(c, pa.string())) for c in COLUMNS])


# ---------------------------------------------------------------- import
def _parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number from 1, record), a row group at a time."""
    pa, pq = _pyarrow()
    if not path.is_file():
        raise RlaifError(f"{path}: human labels file not found (check the path)")
    try:
        f = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types
        raise RlaifError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    n = 0
    with f:
        for g in range(f.num_row_groups):
            try:
                rows = f.read_row_group(g).to_pylist()
            except Exception as e:  # noqa: BLE001
                raise RlaifError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
            for r in rows:
                n += 1
                yield n, r


def _not_ai(path: Path, n: int, obj: dict) -> bool:
    if is_ai_record(obj):
        raise RlaifError(f"{path}:{n}: an AI label (marked by `labels export` as AI); import human labels "
                         "only (export with --source human)")
    return True


def _need(path: Path, n: int, obj: dict, key: str) -> str:
    v = obj.get(key)
    if not isinstance(v, str) or not v.strip():
        raise RlaifError(f"{path}:{n}: label record needs a non-empty string field {key!r}")
    return v


def read_labels(path: str | Path, human: bool = False) -> tuple[list[HumanLabel], list[Feedback]]:
    """Every label and feedback item of ``iter_labels``, in lists."""
    feedback: list[Feedback] = []
    return list(iter_labels(path, human, feedback)), feedback


def _given(obj: dict, key: str, default: str | None) -> str | None:
    v = obj.get(key)
    return v if isinstance(v, str) and v.strip() else default


def iter_labels(path: str | Path, human: bool = False, feedback: list[Feedback] | None = None
                ) -> Iterator[HumanLabel]:
    """Labels from a TRL / A/B / feedback / exported JSONL file or an exported Parquet file, source
    import:NAME:LINE with NAME ``vocab.import_name(path)`` (``human=True``: import-human:NAME:LINE, the user
    vouches a human made them; only those may enter the held-out eval split). Single-response feedback
    (thumbs, ratings, rankings) is appended to ``feedback``. Streamed: a bad record raises where it stands, so
    the caller writes inside one transaction (`labels import`: nothing is kept unless the whole file reads)."""
    p = safeio.check_regular_file(path, "labels import file")
    if p.suffix == ".parquet":
        records = ((n, o, HumanLabel(_need(p, n, o, "prompt"), _need(p, n, o, "chosen"), _need(p, n, o, "rejected")),
                    []) for n, o in _parquet_rows(p) if _not_ai(p, n, o))
    else:
        records = iter_label_file(p)  # refuses AI records itself
    empty, name = True, import_name(path)
    for n, obj, h, items in records:
        empty = False
        source = import_source(name, n, human=human)
        if feedback is not None:
            feedback += [replace(f, source=source) for f in items]
        if h is None:
            continue  # single-response feedback
        label = h.label
        if "chosen" in obj and obj.get("label") is not None:
            if obj["label"] not in LABELS:
                raise RlaifError(f"{p}:{n}: 'label' must be one of {', '.join(LABELS)}, got {obj['label']!r}")
            label = obj["label"]
        # an export's annotator and note, else the record's annotator and comment
        yield HumanLabel(h.prompt, h.chosen, h.rejected, label, source, _given(obj, "annotator", h.annotator),
                         _given(obj, "note", h.note))
    if empty:
        raise RlaifError(f"{p}: no labels found")
