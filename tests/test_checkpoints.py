"""A half-written checkpoint (kill or full disk during a save) is skipped and deleted, training
resumes from the previous complete one or from scratch; a changed config discards checkpoints.
The checkpoints are real ones written by transformers' Trainer and accelerate's save_state."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rlaif.train.checkpoints import STAMP, is_complete, latest_complete, prepare


def _trainer(out: Path, max_steps: int, save_total_limit: int = 2):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    torch.manual_seed(0)
    m = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_layer=1, n_head=2, n_embd=16, n_positions=32))
    data = [{"input_ids": torch.arange(8), "labels": torch.arange(8)} for _ in range(16)]
    args = TrainingArguments(output_dir=str(out), max_steps=max_steps, save_steps=2,
                             save_total_limit=save_total_limit, per_device_train_batch_size=2, report_to="none",
                             use_cpu=True, disable_tqdm=True, logging_steps=100)
    return Trainer(model=m, args=args, train_dataset=data)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """checkpoint-2 and checkpoint-4 written by a real Trainer."""
    out = tmp_path_factory.mktemp("ckpt") / "checkpoints"
    _trainer(out, 4).train()
    assert {d.name for d in out.iterdir() if d.is_dir()} == {"checkpoint-2", "checkpoint-4"}
    return out


@pytest.fixture
def folder(saved, tmp_path) -> Path:
    out = tmp_path / "checkpoints"
    shutil.copytree(saved, out)
    (out / STAMP).write_text(json.dumps({"input_hash": "h"}))  # as the stage's first run stamped it
    return out


def _truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


DAMAGE = {
    "no-trainer-state": lambda d: (d / "trainer_state.json").unlink(),
    "cut-trainer-state": lambda d: _truncate(d / "trainer_state.json"),
    "no-model": lambda d: (d / "model.safetensors").unlink(),
    "empty-model": lambda d: (d / "model.safetensors").write_bytes(b""),
    "cut-model": lambda d: _truncate(d / "model.safetensors"),
    "no-optimizer": lambda d: (d / "optimizer.pt").unlink(),
    "cut-optimizer": lambda d: _truncate(d / "optimizer.pt"),
    "empty-scheduler": lambda d: (d / "scheduler.pt").write_bytes(b""),
    "only-config": lambda d: [p.unlink() for p in d.iterdir() if p.name != "config.json"],
}


def test_complete_checkpoints_are_found(folder):
    assert is_complete(folder / "checkpoint-2") and is_complete(folder / "checkpoint-4")
    assert latest_complete(folder) == str(folder / "checkpoint-4")
    assert latest_complete(folder / "missing") is None


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_half_written_checkpoint_is_skipped_and_resume_works(folder, damage):
    DAMAGE[damage](folder / "checkpoint-4")
    assert not is_complete(folder / "checkpoint-4")
    assert latest_complete(folder) == str(folder / "checkpoint-2")
    from rlaif.train.hf import (
        last_checkpoint,  # what the sft/rm/dpo/online trainers resume from
    )

    assert last_checkpoint(folder) == str(folder / "checkpoint-2")
    prepare(folder, "h")  # the re-run: deletes the half-written one, keeps checkpoint-2
    assert not (folder / "checkpoint-4").exists() and latest_complete(folder) == str(folder / "checkpoint-2")
    # resuming from what is chosen works (transformers' own choice, checkpoint-4, would fail)
    trainer = _trainer(folder, 6)
    trainer.train(resume_from_checkpoint=latest_complete(folder))
    assert trainer.state.global_step == 6


@pytest.mark.parametrize("damage", ["no-trainer-state", "cut-model"])
def test_half_written_checkpoints_are_deleted_and_the_rest_kept(folder, damage):
    DAMAGE[damage](folder / "checkpoint-4")
    prepare(folder, "h")
    assert not (folder / "checkpoint-4").exists() and is_complete(folder / "checkpoint-2")
    DAMAGE[damage](folder / "checkpoint-2")
    prepare(folder, "h")
    assert latest_complete(folder) is None and not (folder / "checkpoint-2").exists()  # from scratch


def test_changed_inputs_discard_checkpoints(folder):
    prepare(folder, "h")
    assert latest_complete(folder) == str(folder / "checkpoint-4")  # same config: resume
    prepare(folder, "config-b")
    assert latest_complete(folder) is None  # changed config: from scratch
    assert json.loads((folder / STAMP).read_text()) == {"input_hash": "config-b"}


def test_unstamped_checkpoints_are_discarded(folder):
    (folder / STAMP).unlink()
    prepare(folder, "config-a")  # made by an older rlaif, or by hand: no proof of their config
    assert latest_complete(folder) is None


def test_ppo_accelerate_checkpoint_format(tmp_path):
    import torch
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters())
    model, opt = acc.prepare(model, opt)
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    d = tmp_path / "checkpoints" / "step-3"
    acc.save_state(str(d), safe_serialization=False)  # as rlaif/train/ppo.py saves
    (d / "ppo_state.json").write_text(json.dumps({"step": 3}))
    assert is_complete(d)
    assert latest_complete(d.parent) == str(d)
    _truncate(d / "ppo_state.json")
    assert not is_complete(d) and latest_complete(d.parent) is None
