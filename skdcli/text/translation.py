"""Translation on the shared text stack, used by both translation recipes (nlg-smooth, nlp-embed mode=nmt):

    score_translation    one pass over a split: teacher-forced NLL / ECE / MCE / accuracy on every batch,
                         decoding (greedy or beam) and BLEU / sacreBLEU / chrF with their signatures
    translation_export_spec  the engine's ExportSpec: the ``torch.export`` program (src_ids, tgt_ids) ->
                         next-token log-probs, the tokenizer and manifest entries (decoding settings, languages)
    Translator           text in, text out from an export alone (no training code, no run directory)
    translate_texts      arguments or stdin, one output line per input line

Decoding lengths follow fairseq-generate (``--max-len-a 0 --max-len-b 200`` by default): at most
``a * S + b`` tokens, S the batch's padded source width (</s> included, fairseq's
``src_tokens.size(1)``), capped by the model's positions.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

import torch

from ..engine.compare import summary_cell
from ..engine.errors import SkdError
from ..engine.export import load_exported
from ..engine.stages import ExportSpec
from ..engine.trainer import move_to
from .metrics import TokenCalibration, detokenize, remove_bpe, translation_scores
from .parallel import ParallelDataset, collate_parallel
from .seq2seq import Seq2SeqTransformer, TranslationProgram, beam_search, pad_batch, program_scorer
from .tokenizer import EOS_ID, PAD_ID, TextTokenizer, load_tokenizer

INTERFACE = "translation"  # manifest["interface"] of a translation export


@dataclass
class DecodeOptions:
    beam_size: int = 5  # 1 = greedy
    lenpen: float = 1.0  # fairseq: a finished hypothesis scores sum(log p) / len**lenpen
    max_len_a: float = 0.0  # fairseq-generate's defaults: at most a * S + b tokens
    max_len_b: int = 200

    @classmethod
    def from_eval(cls, ev: Any, beam: int | None = None) -> DecodeOptions:
        """From a recipe's eval config (beam_size, lenpen, max_len_a, max_len_b); ``beam`` overrides its beam size
        (validation decodes greedily)."""
        return cls(
            beam_size=ev.beam_size if beam is None else beam,
            lenpen=ev.lenpen,
            max_len_a=ev.max_len_a,
            max_len_b=ev.max_len_b,
        )


# the columns every translation report shows (nlg-smooth, nlp-embed mode=nmt), after the system name
TRANSLATION_COLUMNS = ["BLEU (tok.)", "sacreBLEU", "chrF", "NLL", "ECE %", "MCE %"]


def translation_rows(systems: dict[str, dict], several: bool) -> list[list]:
    """One report row per system under TRANSLATION_COLUMNS (ECE / MCE in %), mean ± std over seeds when several."""
    return [
        [name, *(summary_cell(r, key, several, scale) for key, scale in _TRANSLATION_KEYS)]
        for name, r in systems.items()
    ]


_TRANSLATION_KEYS = (("bleu", 1.0), ("bleu_sacre", 1.0), ("chrf", 1.0), ("nll", 1.0), ("ece", 100.0), ("mce", 100.0))


def max_output_len(src_width: int, decode: DecodeOptions, max_positions: int) -> int:
    """Longest output (</s> excluded) for a batch whose padded source width is ``src_width``."""
    return max(1, min(int(decode.max_len_a * src_width + decode.max_len_b), max_positions - 2))


def score_translation(
    model: Seq2SeqTransformer,
    batches: Iterable[dict],
    device: torch.device,
    tokenizer: TextTokenizer,
    dataset: ParallelDataset,
    decode: DecodeOptions,
    *,
    ece_bins: int = 10,
    decode_max: int = 0,
    keep_bpe: bool = False,
    lang: str = "en",
) -> dict:
    """Teacher-forced NLL / ECE / MCE / accuracy on all batches, and BLEU / sacreBLEU / chrF of the
    first ``decode_max`` decoded sentences (0 = all, < 0 = no decoding). ``lang`` = the target
    language (Moses detokenizer). Returns ``metrics`` (floats), ``signatures`` (sacreBLEU's),
    ``calibration`` (with the per-bin table) and the texts."""
    calib = TokenCalibration(ece_bins, PAD_ID)
    hyps: list[str] = []
    refs: list[str] = []
    srcs: list[str] = []
    max_positions = model.sizes.max_positions
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in batches:
            batch = move_to(batch, device)
            calib.update(model(batch["src"], batch["tgt_in"]), batch["tgt_out"])
            if decode_max < 0 or (decode_max and len(hyps) >= decode_max):
                continue
            max_len = max_output_len(batch["src"].shape[1], decode, max_positions)
            ids = beam_search(model.scorer(), batch["src"], decode.beam_size, max_len, decode.lenpen)
            for i, out in zip(batch["index"].tolist(), ids):
                hyps.append(tokenizer.decode(out))
                refs.append(dataset.tgt_text[i])
                srcs.append(dataset.src_text[i])
    model.train(was_training)
    if keep_bpe:
        hyps, refs = [remove_bpe(h) for h in hyps], [remove_bpe(r) for r in refs]
    calibration = calib.result()
    metrics = {k: calibration[k] for k in ("nll", "ppl", "accuracy", "ece", "mce")}
    signatures: dict[str, str] = {}
    if hyps:
        scores = translation_scores(hyps, refs, lang)
        metrics.update(bleu=scores["bleu_tokenized"], bleu_sacre=scores["bleu_sacre"], chrf=scores["chrf"])
        signatures = {
            "bleu": scores["bleu_tokenized_signature"],
            "bleu_sacre": scores["bleu_sacre_signature"],
            "chrf": scores["chrf_signature"],
        }
    return {
        "metrics": metrics,
        "signatures": signatures,
        "calibration": calibration,
        "hyps": hyps,
        "refs": refs,
        "srcs": srcs,
    }


BLEU_CONVENTION = (
    "bleu: tokenized, case-insensitive (fairseq/IWSLT: sacrebleu tokenize=none on lowercased text); "
    "bleu_sacre: sacreBLEU 13a, case-sensitive, on Moses-detokenized text (sacremoses)"
)


def _is_lowercase(texts: list[str]) -> bool:
    return all(t == t.lower() for t in texts[:2000])


def translation_export_spec(
    model: Seq2SeqTransformer,
    tokenizer: TextTokenizer,
    dataset: ParallelDataset,
    *,
    data_info: dict,
    train_texts: tuple[list[str], list[str]],
    decode: DecodeOptions,
    manifest: dict | None = None,
    result_keys: tuple[str, ...] = (),
) -> ExportSpec:
    """The engine's ``ExportSpec`` of a ``TranslationProgram`` with dynamic batch and lengths;
    ``dataset`` gives the example and parity inputs (a few pairs, a batch of one, a one-token
    prefix). ``manifest`` adds recipe entries (e.g. the training method)."""
    items = [dataset[i] for i in range(min(5, len(dataset)))]
    if not items:
        raise SkdError("no sentence pairs to export with (empty split)")
    example, parity, single = collate_parallel(items[:2]), collate_parallel(items), collate_parallel(items[-1:])
    limit = model.sizes.max_positions
    batch = torch.export.Dim("batch", min=1, max=4096)
    src_len = torch.export.Dim("src_len", min=1, max=limit)
    tgt_len = torch.export.Dim("tgt_len", min=1, max=limit)

    def write_files(folder: Path) -> dict:
        tokenizer.save(folder / "tokenizer")
        return {"tokenizer": "tokenizer"}

    return ExportSpec(
        TranslationProgram(model).eval(),
        (example["src"], example["tgt_in"]),
        dynamic_shapes=({0: batch, 1: src_len}, {0: batch, 1: tgt_len}),
        parity_inputs=[
            (parity["src"], parity["tgt_in"]),
            (single["src"], single["tgt_in"]),
            (single["src"], single["tgt_in"][:, :1]),
        ],
        write_files=write_files,
        result_keys=("interface", *result_keys),
        manifest={
            "interface": INTERFACE,
            "src_lang": data_info.get("src_lang"),
            "tgt_lang": data_info.get("tgt_lang"),
            "lowercase": _is_lowercase(train_texts[0]) and _is_lowercase(train_texts[1]),
            "bpe": data_info.get("bpe", "remove"),
            "max_positions": limit,
            "decoding": asdict(decode),
            "model": {
                "arch": model.sizes.arch,
                "d_model": model.sizes.d_model,
                "encoder_layers": model.sizes.encoder_layers,
                "decoder_layers": model.sizes.decoder_layers,
            },
            "inputs": [
                "src_ids (B, S) int64: pieces + </s>, padded with 0",
                "tgt_ids (B, T) int64: <s> + prefix, padded with 0",
            ],
            "outputs": ["log_probs (B, T, V) float32: next-token log-probabilities"],
            "special_ids": {"pad": PAD_ID, "unk": 1, "bos": 2, "eos": EOS_ID},
            **(manifest or {}),
        },
    )


class Translator:
    """An exported translation model + its tokenizer: text in, text out (no training code needed).
    ``task`` is the recipe whose exports this accepts (its manifest's ``task``)."""

    def __init__(self, model_path: str | Path, task: str, beam_size: int | None = None, lenpen: float | None = None):
        self.program, self.manifest, folder = load_exported(model_path, task)
        if self.manifest.get("interface", INTERFACE) != INTERFACE:
            raise SkdError(f"not a translation export (interface={self.manifest.get('interface')})", folder)
        self.tokenizer = load_tokenizer(folder / self.manifest["tokenizer"])
        saved = self.manifest["decoding"]
        self.decode = DecodeOptions(
            beam_size=beam_size or saved["beam_size"],
            lenpen=saved["lenpen"] if lenpen is None else lenpen,
            max_len_a=saved["max_len_a"],
            max_len_b=saved["max_len_b"],
        )
        if self.decode.beam_size < 1:
            raise SkdError(f"--beam-size must be >= 1, got {self.decode.beam_size}")
        self.max_positions = self.manifest["max_positions"]
        self.max_tokens = self.max_positions - 2
        self.tgt_lang = self.manifest.get("tgt_lang") or "en"

    def translate(self, lines: list[str], where: str = "input", first_line: int = 1) -> list[str]:
        texts = [" ".join(t.split()) for t in lines]
        if self.manifest.get("lowercase"):
            texts = [t.lower() for t in texts]
        todo = [(i, self.tokenizer.encode(t)) for i, t in enumerate(texts) if t]
        for i, ids in todo:
            if len(ids) > self.max_tokens:
                raise SkdError(
                    f"line {first_line + i}: {len(ids)} tokens, more than the model's limit of {self.max_tokens}", where
                )
        out = [""] * len(texts)
        if todo:
            src = pad_batch([ids + [EOS_ID] for _, ids in todo])
            max_len = max_output_len(src.shape[1], self.decode, self.max_positions)
            ids = beam_search(program_scorer(self.program), src, self.decode.beam_size, max_len, self.decode.lenpen)
            for (i, _), hyp in zip(todo, ids):
                text = self.tokenizer.decode(hyp)
                out[i] = remove_bpe(text) if self.manifest.get("bpe") == "keep" else text
        return out


def translate_texts(
    translator: Translator,
    texts: list[str],
    detok: bool = False,
    batch_size: int = 16,
    stdin: TextIO | None = None,
    stream: TextIO | None = None,
) -> dict:
    """Translate ``texts``, or (none given) stdin line by line; ``stream`` gets one output line per
    input line (empty lines stay empty). ``detok`` runs the Moses detokenizer of the target language."""
    post: Callable[[str], str] = (lambda s: detokenize(s, translator.tgt_lang)) if detok else (lambda s: s)
    results: list[dict] = []

    def emit(batch: list[str], where: str, first: int) -> None:
        for src, hyp in zip(batch, translator.translate(batch, where, first)):
            results.append({"src": src, "hyp": post(hyp)})
            if stream is not None:
                stream.write(post(hyp) + "\n")
        if stream is not None:
            stream.flush()

    if texts:
        emit(list(texts), "argument", 1)
    else:
        stdin = stdin or sys.stdin
        batch: list[str] = []
        first = 1
        for n, raw in enumerate(stdin, 1):
            batch.append(raw.rstrip("\n").rstrip("\r"))
            if len(batch) >= max(batch_size, 1):
                emit(batch, "<stdin>", first)
                batch, first = [], n + 1
        if batch:
            emit(batch, "<stdin>", first)
    return {"beam_size": translator.decode.beam_size, "lenpen": translator.decode.lenpen, "translations": results}
