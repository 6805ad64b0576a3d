"""mode=nmt: the same embedding-space self-KD on a translation model (the paper's NMT half).

Data = a parallel dataset of the shared text stack (`prep --source iwslt14|parallel|synthetic-nmt`,
skdcli/text/parallel.py); model = its Transformer encoder-decoder (skdcli/text/seq2seq.py);
W = the decoder's output embedding (the joint, tied embedding by default). The loss is
``embedding_skd_loss`` unchanged: it only sees (B, T, V) logits, targets, a mask and W.
Eval: teacher-forced NLL / ECE / MCE on the references, BLEU (tokenized and sacreBLEU) and chrF of
beam-search output (text-common.md §2-3).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..engine.schedules import Progress, build_weight_schedule
from ..engine.teachers import unwrap_model
from ..engine.trainer import Task
from ..text.parallel import ParallelTaskData
from ..text.seq2seq import Seq2SeqTransformer
from ..text.tokenizer import BOS_ID, PAD_ID
from ..text.translation import DecodeOptions, score_translation
from .config import NlpEmbedConfig
from .loss import NeighbourTable, embedding_skd_loss


def build_seq2seq(cfg: NlpEmbedConfig, vocab_size: int) -> Seq2SeqTransformer:
    return Seq2SeqTransformer(cfg.nmt.sizes(vocab_size))


def output_embedding(model) -> torch.Tensor:
    model = unwrap_model(model)
    return model.tgt_embed.weight if model.output is None else model.output.weight


class NlpEmbedNmtTask(ParallelTaskData, Task):
    def __init__(self, cfg: NlpEmbedConfig, data_dir: str | Path):
        self.cfg = cfg
        self.open_parallel(data_dir, cfg.nmt.max_positions)
        self.beta = build_weight_schedule(cfg.kd.beta)
        uses_table = cfg.kd.method in ("skd", "noise", "random") and cfg.kd.topk > 0
        # <pad> and <s> are never targets, so never neighbours
        self.neighbours = (
            NeighbourTable(
                cfg.kd.topk,
                cfg.kd.sim,
                cfg.kd.include_gold,
                cfg.kd.refresh_every,
                exclude=(PAD_ID, BOS_ID),
                seed=cfg.train.seed,
                choice="random" if cfg.kd.method == "random" else "nearest",
            )
            if uses_table
            else None
        )

    def build_model(self) -> Seq2SeqTransformer:
        return build_seq2seq(self.cfg, self.tokenizer.vocab_size)

    def teachers(self) -> dict:
        return {"neighbours": self.neighbours} if self.neighbours is not None else {}

    def compute_loss(self, model, batch: dict, progress: Progress):
        kd = self.cfg.kd
        logits = model(batch["src"], batch["tgt_in"])
        targets = batch["tgt_out"]
        beta = float(self.beta(progress))
        weight = output_embedding(model)
        table = None
        if self.neighbours is not None and beta > 0:
            self.neighbours.get(weight, progress.step)
            table = self.neighbours.to(logits.device)
        return embedding_skd_loss(logits, targets, targets != PAD_ID, weight, beta, kd, table)

    def evaluate(self, model, loader, device) -> dict[str, float]:
        return score_translation(
            model,
            loader,
            device,
            self.tokenizer,
            self.dataset("valid"),
            DecodeOptions.from_eval(self.cfg.eval, beam=1),
            ece_bins=self.cfg.eval.ece_bins,
            decode_max=self.cfg.eval.valid_decode_max,
            keep_bpe=self.data.info.get("bpe") == "keep",
            lang=self.tgt_lang,
        )["metrics"]
