"""Rich progress bars for long work, and a trainer callback that drives one."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def make_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=not console.is_terminal,
        disable=not console.is_terminal and "pytest" in sys.modules,
    )


@contextlib.contextmanager
def task(description: str, total: int | None) -> Iterator:
    """``with task("judge", n) as advance: advance(k, info="...")``."""
    with make_progress() as progress:
        tid = progress.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str | None = None, total: int | None = None) -> None:
            kw = {"info": info} if info is not None else {}
            if total is not None:
                kw["total"] = total
            progress.update(tid, advance=n, **kw)

        yield advance


def trainer_callback(description: str):
    """A transformers TrainerCallback that shows a rich bar instead of printed dicts."""
    from transformers import TrainerCallback

    class _RichCallback(TrainerCallback):
        def __init__(self):
            self._cm = None
            self._advance = None
            self._last = 0

        def on_train_begin(self, args, state, control, **kw):
            self._cm = task(description, state.max_steps)
            self._advance = self._cm.__enter__()
            self._last = state.global_step
            self._advance(state.global_step)

        def on_step_end(self, args, state, control, **kw):
            self._advance(state.global_step - self._last)
            self._last = state.global_step

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs and self._advance:
                self._advance(0, info=f"loss {float(logs['loss']):.3f}")

        def on_train_end(self, args, state, control, **kw):
            if self._cm is not None:
                self._cm.__exit__(None, None, None)
                self._cm = None

    return _RichCallback()


def use_rich_progress(trainer, description: str) -> None:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(trainer_callback(description))
