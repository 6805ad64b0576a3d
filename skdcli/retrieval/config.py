"""Typed config of the retrieval recipe (Song et al., CIKM 2025: joint sparse-dense self-KD).

Defaults = the tiny embedded setup that `skd retrieval run` trains on CPU in well under three
minutes (cached embeddings of the synthetic shapes corpus). `recipes/retrieval/{coco,flickr}.yaml`
hold the official code's per-dataset settings (training_config/*.json of holi-lab/mm-sparse-retrieval).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.config import TrainConfig, choice
from ..engine.errors import SkdError


@dataclass
class ModelConfig:
    # Dense "final layer" text_proj / vision_proj: pre-projection width -> proj_dim, L2-normalised.
    proj_dim: int = 32  # official: 256 (BLIP/ALBEF); the tiny default takes the stand-in CLIP's 32
    # Start text_proj / vision_proj from the encoder's own projection layers (the official code
    # copies LAVIS' text_proj / vision_proj). true needs them in the prepared dataset (prep with
    # --encoder, or --init FILE for ready-made embeddings) with the model's shapes: anything else is
    # an error naming both shapes, never a silent random init. false = random init, recorded as such.
    init_proj_from_encoder: bool = True
    # Sparse head z = log1p(relu(W_voc · LN(W_p · u + b))), W_voc initialised from a detached clone
    # of the text encoder's word-embedding matrix E (V x d_word); true needs E in the prepared dataset.
    init_vocab_from_encoder: bool = True
    vocab_size: int = 0  # only used without E from prep (0 = take the dataset's vocab_size)
    word_dim: int = 0  # width of W_p's output / LN without E (0 = 768, the official BERT width)
    # Terms the sparse head may not use (their weight is fixed at 0; recipes/retrieval/README.md §2):
    # the tokenizer's special tokens ([PAD], [UNK], [CLS], ...: not words, yet they took most of the
    # sparse score mass in a toy run); optionally a stop-list ("english" = scikit-learn's list, or a
    # file with one word per line) and a document-frequency cap (terms in more than max_df of the
    # train captions; 1.0 = off). Ours: the official code masks nothing.
    mask_special_tokens: bool = True
    stopwords: str = ""
    max_df: float = 1.0
    temperature: float = 0.07  # initial tau of the dense score; learnable, clamped to [0.001, 0.5]
    learn_temperature: bool = True


@dataclass
class LossConfig:
    # skd (contrastive + mutual self-KD) | contrastive (the paper's "without SKD")
    method: str = choice("skd", ["skd", "contrastive"])
    w_dense: float = 0.1  # w1: integrated score S_x = w1 * S_d + w2 * S_s
    w_sparse: float = 0.2  # w2
    lambda_dense: float = 0.7  # λ1: weights L_dense and (official code) the dense distillation term
    lambda_sparse: float = 0.7  # λ2: same for the sparse terms
    # Correct (default) vs official-code behaviour, each switch documented in recipes/retrieval/README.md:
    detach_teacher: bool = (
        True  # stop-gradient on softmax(S_x); false = the official code (gradients flow into the teacher)
    )
    compat_official: bool = False  # true: text->image teacher rows = softmax_row(S_x), not softmax_row(S_x^T)
    # l1 (official code: mean_b sum_v |z_bv|) | flops (SPLADE: sum_v (mean_b |z_bv|)^2)
    reg: str = choice("l1", ["l1", "flops"])
    q_reg: float = 1e-3  # η_q on the text (query) vectors
    d_reg: float = 1e-3  # η_d on the image (document) vectors
    reg_warmup_frac: float = 0.2  # η(t) = η (t/T)^2 for t <= T = frac * max_steps (official: 0.2)


@dataclass
class EvalConfig:
    # split the eval stage scores (the Karpathy test split); val is used during training
    split: str = choice("test", ["test", "val", "train"])
    topk: int = 10  # depth of the run (R@1/5/10 and MRR@10 are computed on the top-10 run)
    # Integrated score at eval: "cos" = w1 * cos + w2 * sparse (official eval, no tau);
    # "temp" = w1 * cos / tau + w2 * sparse (the training-time S_x). Both are reported; this picks `integrated`.
    integrated_scale: str = choice("cos", ["cos", "temp"])
    # d2s (correct: sum_v P(q_v != 0) P(d_v != 0)) | official (the CIKM code's score sum, a bug)
    flops: str = choice("d2s", ["d2s", "official"])
    truncate_topk: int = 0  # keep only the top-k terms of each sparse vector at eval (0 = off; official option)


@dataclass
class IndexConfig:
    # seismic (pyseismic-lsr) | exact (scipy.sparse term-at-a-time)
    engine: str = choice("seismic", ["seismic", "exact"])
    # Seismic build parameters. At the tiny scale nothing is pruned (lists are shorter than
    # n_postings), so the index returns the exhaustive top k; the values are the ones measured
    # best at 1M synthetic documents (recipes/retrieval/README.md, performance).
    n_postings: int = 2000  # average postings kept per term (Seismic's global-threshold pruning)
    max_fraction: float = 1.5  # no list longer than n_postings * max_fraction
    centroid_fraction: float = 0.02  # blocks per posting list, as a fraction of its length
    min_cluster_size: int = 2
    summary_energy: float = 0.4
    doc_cut: int = 15
    # Seismic search parameters
    query_cut: int = 10  # query terms kept (largest weights)
    heap_factor: float = 0.7  # skip a block whose summary score < heap_factor x the current k-th best
    k: int = 10


@dataclass
class BenchConfig:
    """`skd bench retrieval`: index vs exact dense vs exact scipy on synthetic vectors."""

    doc_sizes: list[int] = field(default_factory=lambda: [10_000, 100_000, 1_000_000])
    queries: int = 200
    vocab_size: int = 30_522  # BERT vocabulary, as in the paper's sparse heads
    doc_nnz: int = 64  # mean non-zeros per image vector
    query_nnz: int = 16  # mean non-zeros per caption vector
    zipf: float = 1.1  # term popularity ~ rank^-zipf
    dense_dim: int = 256  # the dense score's width (official proj_dim)
    batch: int = 64  # queries per batch for the throughput figure
    threads: int = 1  # pinned threads for latency (torch, numpy via threadpool, Seismic)
    # Seismic search settings measured on the same index: [query_cut, heap_factor] pairs
    seismic_settings: list[list[float]] = field(default_factory=lambda: [[10, 0.7], [20, 0.8], [30, 0.9]])


def _train_defaults() -> TrainConfig:
    return TrainConfig(
        max_steps=600,
        batch_size=128,
        lr=2e-3,
        weight_decay=0.05,
        betas=[0.9, 0.999],
        lr_schedule="linear_warmup_linear",
        warmup_steps=120,
        min_lr_ratio=0.0,
        grad_clip=1.0,
        group_by_length=False,
        log_every=10,
        eval_every=200,
        checkpoint_every=200,
        best_metric="val/sparse/R@1",
        best_mode="max",
    )


@dataclass
class RetrievalConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=_train_defaults)
    eval: EvalConfig = field(default_factory=EvalConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    # torch CPU threads while training / scoring (0 = torch's default). The tiny default's matrices
    # are small: one thread is as fast on an idle machine and far faster on a busy one (no OpenMP
    # spin-waiting on oversubscribed cores). Real-data configs set 0.
    cpu_threads: int = 1

    def validate(self) -> None:
        if self.cpu_threads < 0:
            raise SkdError(f"cpu_threads must be >= 0 (got {self.cpu_threads})")
        if not 0.0 < self.model.max_df <= 1.0:
            raise SkdError(f"model.max_df must be in (0, 1] (got {self.model.max_df})")
        if self.model.proj_dim < 1:
            raise SkdError(f"model.proj_dim must be >= 1 (got {self.model.proj_dim})")
        if not 0.001 <= self.model.temperature <= 0.5:
            raise SkdError(f"model.temperature must be in [0.001, 0.5] (got {self.model.temperature})")
        if not 0.0 <= self.loss.reg_warmup_frac <= 1.0:
            raise SkdError(f"loss.reg_warmup_frac must be in [0, 1] (got {self.loss.reg_warmup_frac})")
        if min(self.loss.q_reg, self.loss.d_reg) < 0:
            raise SkdError("loss.q_reg and loss.d_reg must be >= 0")
        if self.eval.topk < 10:
            raise SkdError(f"eval.topk must be >= 10 (R@10 and MRR@10 need a top-10 run; got {self.eval.topk})")
        if any(n < 1 for n in self.bench.doc_sizes) or not self.bench.doc_sizes:
            raise SkdError("bench.doc_sizes must be a non-empty list of positive sizes")
