"""Read a labels file in a child process while the caller writes what it reads.

`rlaif labels import` of a million labels spends about half its time in Python reading, checking and
hashing records and half in SQLite upserting them; on one core they add up (about 55 s at 1M here).
Here a forked child runs ``labels.iter_labels`` (every check, every error as it would be raised in
process, each label's key computed there) and sends labels in batches through a pipe, which bounds
what is in flight; the caller's process only unpickles and writes. Where ``fork`` is not available,
or for a small file, the file is read in process, with the same result.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Iterator
from pathlib import Path

from rlaif.errors import RlaifError
from rlaif.records import Feedback, HumanLabel

BATCH = 2_000
IN_PROCESS_BYTES = 2_000_000  # smaller files: a child costs more than it saves


def _child(conn, other_end, path: str, human: bool) -> None:
    from rlaif.labels import iter_labels

    # The fork copied the parent's read end: closed here, so that when the parent dies the pipe has no reader
    # left and the next send fails (BrokenPipeError) instead of blocking for ever.
    other_end.close()
    feedback: list[Feedback] = []
    batch: list[HumanLabel] = []
    try:
        for h in iter_labels(path, human, feedback):
            h.key  # noqa: B018 - computed here, carried by pickle
            batch.append(h)
            if len(batch) >= BATCH:
                conn.send(("labels", batch))
                batch = []
        conn.send(("labels", batch))
        conn.send(("done", feedback))
    except RlaifError as e:
        conn.send(("labels", batch))  # the labels before the bad record, as the in-process reader yields them
        conn.send(("error", str(e)))
    except (KeyboardInterrupt, BrokenPipeError):
        pass  # the parent got the Ctrl-C too, or is gone
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("crash", traceback.format_exc()))
    finally:
        conn.close()


def read_labels_file(path: str | Path, human: bool = False, feedback: list[Feedback] | None = None
                     ) -> Iterator[HumanLabel]:
    """``labels.iter_labels(path, human, feedback)``, read ahead in a child process: the same labels in
    the same order, the same RlaifError (raised where the bad record stands in the stream), the
    feedback appended once the file is read."""
    from rlaif.labels import iter_labels

    p = Path(path)
    try:
        small = p.stat().st_size < IN_PROCESS_BYTES
    except OSError:
        small = True  # iter_labels names the problem
    if small or "fork" not in mp.get_all_start_methods():
        yield from iter_labels(p, human, feedback)
        return
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, parent, str(p), human), daemon=True)
    proc.start()
    child.close()
    try:
        while True:
            try:
                kind, payload = parent.recv()
            except EOFError:
                raise RlaifError(f"{p}: the process reading the file stopped (exit code {proc.exitcode}); "
                                 "run the import again") from None
            if kind == "labels":
                yield from payload
            elif kind == "done":
                if feedback is not None:
                    feedback += payload
                return
            elif kind == "error":
                raise RlaifError(payload)
            else:
                raise RuntimeError(f"reading {p} failed in its child process:\n{payload}")
    finally:
        parent.close()
        if proc.is_alive():
            proc.terminate()
        proc.join()
