"""Which trainer checkpoint a killed stage may resume from.

A kill or a full disk during a save leaves a half-written folder: transformers' Trainer writes
``checkpoint-N/`` in place (weights, then optimizer/scheduler/RNG, then ``trainer_state.json``)
and its ``get_last_checkpoint`` takes the highest N whatever its state, so one bad save made every
later run fail. Here a checkpoint counts only when it is complete:

- transformers / trl (``checkpoint-N``): ``trainer_state.json`` parses; the weights
  (``model.safetensors``, its shards by ``model.safetensors.index.json``, ``adapter_model.safetensors``
  or ``pytorch_model.bin``) and ``optimizer.pt`` / ``scheduler.pt`` are present and whole;
- rlaif PPO (``step-N``, accelerate ``save_state``): ``ppo_state.json`` parses; ``pytorch_model.bin``
  (or ``model.safetensors``) and ``optimizer.bin`` present and whole.

"Whole" is checked cheaply: a safetensors file is at least as long as its header says; a torch
pickle (a zip archive) ends with its central directory. Incomplete checkpoints are deleted.

A checkpoint also belongs to one configuration: ``prepare`` stamps the checkpoints folder with the
stage's input hash and empties it when a re-run has other inputs, so a changed config never
resumes from the old config's weights.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import struct
import zipfile
from pathlib import Path

from rlaif.outputs import write_whole

log = logging.getLogger(__name__)

STAMP = ".rlaif_stage.json"
_NAME = re.compile(r"^(?:checkpoint|step)-(\d+)$")
def _whole(path: Path) -> bool:
    try:
        size = path.stat().st_size
        if not path.is_file() or size == 0:
            return False
        if path.suffix == ".safetensors":  # 8-byte header length, JSON header, then the tensors
            with open(path, "rb") as f:
                n = struct.unpack("<Q", f.read(8).ljust(8, b"\0"))[0]
                if n == 0 or 8 + n > size or n > 100_000_000:
                    return False
                header = json.loads(f.read(n))
            ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
            return size >= 8 + n + max(ends, default=0)
        if path.suffix in (".pt", ".bin", ".pth"):
            return zipfile.is_zipfile(path)  # torch.save writes a zip; a cut one has no central directory
        return True
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return False


def _json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _weights_whole(d: Path) -> bool:
    index = d / "model.safetensors.index.json"
    if index.exists():
        data = _json(index)
        shards = set((data or {}).get("weight_map", {}).values())
        return bool(shards) and all(_whole(d / s) for s in shards)
    return any(_whole(d / n) for n in ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin"))


def is_complete(d: Path) -> bool:
    """Whether checkpoint folder ``d`` (``checkpoint-N`` or PPO ``step-N``) was saved whole."""
    if not d.is_dir():
        return False
    if d.name.startswith("step-"):
        return (_json(d / "ppo_state.json") is not None and _weights_whole(d) and _whole(d / "optimizer.bin"))
    state = _json(d / "trainer_state.json")
    return (state is not None and "global_step" in state and _weights_whole(d)
            and _whole(d / "optimizer.pt") and _whole(d / "scheduler.pt"))


def _all(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    out = []
    for d in folder.iterdir():
        m = _NAME.match(d.name)
        if m and d.is_dir():
            out.append((int(m.group(1)), d))
    return sorted(out)


def latest_complete(folder: Path) -> str | None:
    """The highest-step complete checkpoint in ``folder`` (None: train from scratch). Read-only."""
    for _, d in reversed(_all(folder)):
        if is_complete(d):
            return str(d)
    return None


def prepare(folder: Path, input_hash: str) -> None:
    """Before a training stage starts: drop checkpoints made for other inputs (or of unknown
    origin) and incomplete ones, then stamp ``folder`` with ``input_hash``."""
    ckpts = _all(folder)
    stamp = _json(folder / STAMP) or {}
    if ckpts and stamp.get("input_hash") != input_hash:
        log.warning("discarding %d checkpoint(s) in %s: made with other inputs", len(ckpts), folder)
        for _, d in ckpts:
            shutil.rmtree(d, ignore_errors=True)
        ckpts = []
    for _, d in ckpts:
        if not is_complete(d):
            log.warning("deleting incomplete checkpoint %s (a save was interrupted)", d)
            shutil.rmtree(d, ignore_errors=True)
    for d in folder.glob("*.tmp") if folder.is_dir() else []:  # PPO's unfinished saves
        shutil.rmtree(d, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    write_whole(folder / STAMP, json.dumps({"input_hash": input_hash}))


def prepare_stage(run, stage: str, input_hash: str) -> None:
    """``prepare`` for a pipeline stage's checkpoints folder (no-op for stages that do not train)."""
    from rlaif import stages

    s = stages.get(stage)
    if s.checkpoints:
        prepare(run.layout.checkpoints(run.layout.output(s.output)), input_hash)
