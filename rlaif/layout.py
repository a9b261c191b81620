"""Every path of a run directory, in one place.

    WORKDIR/
      store.sqlite            the run store (prompts, candidates, judge calls, labels, stages)
      sft/ pairs/ reward_model/ policy/
                              stage outputs; each appears whole or not at all (finalize_dir)
      <output>.partial/       a stage's work folder while it runs: checkpoints/ (resume after a
                              kill), model/ (the output before it is moved into place)
      report.json report.md   the eval stage's figures and rendering
      manifest.json           provenance of the run
      viewer-journal/         writes `rlaif view` kept while the store was busy, one file per session
                              (rlaif/viewer/journal.py): replayed into the store by the next opening
      .rank<k>/               scratch of process k under ``--launcher accelerate`` (RunLayout.for_worker)
      rounds/<k>/             round k >= 2 of ``rounds: N`` (rlaif/rounds.py): a run directory of its
                              own, with round_source.json (the version of round k-1's policy it copied)
      rounds.json rounds.md rounds.png   the per-round figures

Only stdlib imports: the CLI and the stage table import this at start-up.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

# The stage-output folders (RunLayout fields); a stage names its output by one of these.
OUTPUT_DIRS = ("sft", "critique", "pairs", "reward_model", "policy")


def partial_dir(out: Path) -> Path:
    """The work folder of the output ``out`` (``out`` + ``.partial``)."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def checkpoints_dir(out: Path) -> Path:
    """Where the trainer writing ``out`` keeps its checkpoints."""
    return partial_dir(out) / "checkpoints"


def finalize_dir(tmp: Path, final: Path) -> None:
    """Replace ``final`` with ``tmp`` so an output appears whole or not at all."""
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


@dataclass(frozen=True)
class RunLayout:
    """The paths of the run directory ``root``. The output folders default to ``root/<name>``;
    ``for_worker`` redirects one of them into a process's scratch folder."""

    root: Path
    sft: Path = field(default=None)  # type: ignore[assignment]
    critique: Path = field(default=None)  # type: ignore[assignment]
    pairs: Path = field(default=None)  # type: ignore[assignment]
    reward_model: Path = field(default=None)  # type: ignore[assignment]
    policy: Path = field(default=None)  # type: ignore[assignment]

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))
        for name in OUTPUT_DIRS:
            if getattr(self, name) is None:
                object.__setattr__(self, name, self.root / name)

    @classmethod
    def for_run(cls, config_workdir: str | None, name: str, workdir: str | None = None) -> RunLayout:
        """The run directory: ``--workdir``, else the config's ``workdir``, else ``runs/<name>``."""
        return cls(Path(workdir or config_workdir or Path("runs") / name))

    @classmethod
    def of_store(cls, store: Path | str) -> RunLayout:
        """The layout of the run directory whose run store is ``store``."""
        return cls(Path(store).parent)

    # ------------------------------------------------------------ files
    @property
    def store(self) -> Path:
        return self.root / "store.sqlite"

    @property
    def viewer_journals(self) -> Path:
        """Where viewer sessions journal the writes they keep while the store is busy (rlaif/viewer/journal.py)."""
        return self.root / "viewer-journal"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def samples_json(self) -> Path:
        return self.root / "samples.json"

    @property
    def rounds_json(self) -> Path:
        return self.root / "rounds.json"

    @property
    def rounds_md(self) -> Path:
        return self.root / "rounds.md"

    @property
    def round_source(self) -> Path:
        """In a round >= 2: which version of the previous round's policy its ``sft`` copied."""
        return self.root / "round_source.json"

    def round_dir(self, k: int) -> Path:
        """The run directory of round ``k`` >= 2 of an iterative run (rlaif/rounds.py); round 1 is ``root``."""
        return self.root / "rounds" / str(k)

    def figure(self, name: str) -> Path:
        """A report plot: ``loss``, ``rewards``, ``rl`` or ``rounds`` -> ``root/<name>.png``."""
        return self.root / f"{name}.png"

    # ------------------------------------------------------------ work folders
    def output(self, name: str) -> Path:
        """The output folder ``name`` (one of OUTPUT_DIRS)."""
        if name not in OUTPUT_DIRS:
            raise ValueError(name)
        return getattr(self, name)

    @staticmethod
    def partial(out: Path) -> Path:
        return partial_dir(out)

    @staticmethod
    def checkpoints(out: Path) -> Path:
        return checkpoints_dir(out)

    # ------------------------------------------------------------ launcher scratch
    def scratch(self, rank: int) -> Path:
        """The private folder of process ``rank`` under ``--launcher accelerate``."""
        return self.root / f".rank{rank}"

    def for_worker(self, rank: int, output: str) -> RunLayout:
        """The layout of a non-main process: everything shared, except the output folder ``output``,
        which moves into the process's scratch folder (so the final model is written once)."""
        return replace(self, **{output: self.scratch(rank) / self.output(output).name})
