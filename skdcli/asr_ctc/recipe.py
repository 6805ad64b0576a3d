"""The asr-ctc recipe: the Task the engine trains (data, model and loss wired together), and the hooks
the shared stages call (baseline, tiny corpus, the eval body, the export spec, the `run` pipeline).

The engine does the training and owns the stages (engine/stages.py); each stage returns a dict that
the CLI prints as a table or JSON.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..engine.console import metric_table, progress_bar, progress_callback
from ..engine.contract import StageOptions
from ..engine.errors import SkdError
from ..engine.export import load_exported
from ..engine.schedules import Progress, build_weight_schedule
from ..engine.stages import ExportSpec, Pipeline, RecipeHooks, Trained
from ..engine.trainer import Task, move_to
from .config import AsrCtcConfig
from .data import (
    SAMPLE_RATE,
    AsrDataset,
    FeatureConfig,
    collate_asr,
    compute_features,
    load_prepared,
    prepare_dataset,
    read_audio,
)
from .loss import ctc_self_kd_objective
from .metrics import aggregate_spike_timing, beam_ctc_decode, error_rates, greedy_ctc_decode, spike_timing
from .model import CTCInference, CTCSelfKDModel
from .plots import plot_posteriors
from .tokenizer import load_tokenizer

TASK_NAME = "asr-ctc"


def feature_config(cfg: AsrCtcConfig) -> FeatureConfig:
    return FeatureConfig(kind=cfg.data.feature, sample_rate=SAMPLE_RATE, num_mel_bins=cfg.data.num_mel_bins)


# -- the Task the engine trains ----------------------------------------------------------------------
class AsrCtcTask(Task):
    def __init__(self, cfg: AsrCtcConfig, data_dir: str | Path):
        self.cfg = cfg
        self.data = load_prepared(data_dir)
        self.tokenizer = self.data.tokenizer
        self.features = feature_config(cfg)
        self.alpha = build_weight_schedule(cfg.kd.alpha)
        # HF encoders skip layers (LayerDrop) and use masked_spec_embed only on some steps.
        self.find_unused_parameters = cfg.model.encoder == "hf"

    def data_fingerprint(self) -> str | None:
        return self.data.info.get("fingerprint")

    def build_model(self) -> CTCSelfKDModel:
        return CTCSelfKDModel(self.cfg, self.tokenizer.vocab_size)

    def train_dataset(self) -> AsrDataset:
        rows = self.data.train
        if not rows:
            names = ", ".join(self.data.sets()) or "none"
            raise SkdError(
                f"the dataset has no train set (its sets: {names}); it can only be evaluated "
                "(`eval --data`). Prep a train set (e.g. train-clean-100) to train",
                self.data.root,
            )
        if self.cfg.data.max_train_seconds > 0:
            rows = [r for r in rows if r["duration"] <= self.cfg.data.max_train_seconds]
        return AsrDataset(rows, self.tokenizer, self.features, cache=self.cfg.data.cache_features)

    def eval_dataset(self) -> AsrDataset | None:
        rows = self.data.dev
        return AsrDataset(rows, self.tokenizer, self.features, cache=self.cfg.data.cache_features) if rows else None

    def collate(self, items: list) -> dict:
        return collate_asr(items)

    def example_lengths(self, dataset: AsrDataset) -> list[int]:
        # samples at the model's rate, so files stored at other rates sort where they belong
        return [int(row["num_samples"] * SAMPLE_RATE / row["sample_rate"]) for row in dataset.rows]

    def compute_loss(self, model, batch: dict, progress: Progress):
        out = model(batch["features"], batch["feature_lengths"])
        return ctc_self_kd_objective(out, batch, float(self.alpha(progress)), self.cfg.kd)

    def evaluate(self, model, loader, device) -> dict[str, float]:
        return decode_and_score(model, loader, device, self.cfg, self.tokenizer)["metrics"]


# -- decoding and scoring (used by periodic eval and the eval stage) -------------------------------------
def decode_and_score(
    model: CTCSelfKDModel, loader, device: torch.device, cfg: AsrCtcConfig, tokenizer, keep_posteriors: int = 0
) -> dict:
    heads = ["teacher", "student"] if model.with_student else ["teacher"]
    refs: list[str] = []
    hyps: dict[str, list[str]] = {h: [] for h in heads}
    spikes: list[dict] = []
    kept: list[dict] = []
    for batch in loader:
        batch = move_to(batch, device)
        out = model(batch["features"], batch["feature_lengths"])
        lens = out["out_lengths"].cpu()
        log_probs = {h: torch.log_softmax(out[f"{h}_logits"].float(), -1).cpu() for h in heads}
        refs.extend(batch["texts"])
        for h in heads:
            if cfg.eval.beam_size > 1:
                ids = [beam_ctc_decode(lp[: int(n)], cfg.eval.beam_size) for lp, n in zip(log_probs[h], lens)]
            else:
                ids = greedy_ctc_decode(log_probs[h], lens)
            hyps[h].extend(tokenizer.decode(i) for i in ids)
        if model.with_student:
            for b, n in enumerate(lens.tolist()):
                if len(spikes) < cfg.eval.spike_utterances:
                    spikes.append(spike_timing(log_probs["teacher"][b, :n], log_probs["student"][b, :n]))
                if len(kept) < keep_posteriors:
                    kept.append(
                        {
                            "id": batch["ids"][b],
                            "teacher": log_probs["teacher"][b, :n],
                            "student": log_probs["student"][b, :n],
                        }
                    )
    metrics: dict[str, float] = {}
    for h in heads:
        rates = error_rates(refs, hyps[h])
        metrics[f"wer_{h}"], metrics[f"cer_{h}"] = rates["wer"], rates["cer"]
    main = cfg.export_head
    metrics["wer"], metrics["cer"] = metrics[f"wer_{main}"], metrics[f"cer_{main}"]
    result = {"metrics": metrics, "refs": refs, "hyps": hyps, "posteriors": kept}
    if spikes:
        result["spike_timing"] = aggregate_spike_timing(spikes)
    return result


def score_eval_sets(
    model: CTCSelfKDModel,
    task: AsrCtcTask,
    sets: dict[str, list[dict]],
    device: torch.device,
    keep_posteriors: int = 0,
    on_batch=None,
) -> dict:
    """Decode and score each named set on its own (LibriSpeech reports WER per set, never pooled).

    Returns {"sets": {name: {utterances, wer, cer, wer_<head>, cer_<head>, [spike_timing],
    decode_seconds}}, "refs"/"hyps"/"posteriors" of the first set (examples and the plot)}.
    ``on_batch()`` is called after each decoded batch (a progress bar)."""
    cfg = task.cfg
    result: dict = {"sets": {}}
    for name, rows in sets.items():
        loader = DataLoader(
            AsrDataset(rows, task.tokenizer, task.features),
            batch_size=cfg.train.batch_size,
            shuffle=False,
            collate_fn=collate_asr,
        )

        def batches(loader=loader):
            for batch in loader:
                yield batch
                if on_batch:
                    on_batch()

        t0 = time.perf_counter()
        with torch.no_grad():
            scored = decode_and_score(
                model,
                batches(),
                device,
                cfg,
                task.tokenizer,
                keep_posteriors=keep_posteriors if not result["sets"] else 0,
            )
        entry = {"utterances": len(rows), **scored["metrics"], "decode_seconds": round(time.perf_counter() - t0, 3)}
        if "spike_timing" in scored:
            entry["spike_timing"] = scored["spike_timing"]
        if not result["sets"]:
            result.update(refs=scored["refs"], hyps=scored["hyps"], posteriors=scored["posteriors"])
        result["sets"][name] = entry
    return result


def per_set_table(result: dict):
    """The human view of an eval over named sets: one row per set, the reported head's WER first."""
    from rich.table import Table

    sets = result["sets"]
    heads = [h for h in ("teacher", "student") if any(f"wer_{h}" in m for m in sets.values())]
    table = Table(title=f"WER / CER per set ({result.get('head', '')} head reported, {result.get('decoder', '')})")
    for column in ("set", "utts", "WER %", "CER %", *(f"WER % {h}" for h in heads)):
        table.add_column(column, justify="left" if column == "set" else "right")
    for name, m in sets.items():
        table.add_row(
            name,
            str(m["utterances"]),
            f"{100 * m['wer']:.2f}",
            f"{100 * m['cer']:.2f}",
            *(f"{100 * m[f'wer_{h}']:.2f}" for h in heads),
        )
    return table


# -- stages: what the shared train / eval / export / run commands call (engine/stages.py) -------------------
def prep_stage(
    source: str,
    raw: str | None,
    out: str,
    tokenizer: str = "char",
    vocab_size: int = 64,
    overwrite: bool = False,
    seed: int = 0,
    text_norm: str = "lower",
) -> dict:
    if source in ("librispeech", "manifest") and not raw:
        raise SkdError(f"--source {source} needs --raw PATH")
    with progress_bar(transient=True) as bar:
        return prepare_dataset(
            source,
            raw,
            out,
            tokenizer=tokenizer,
            vocab_size=vocab_size,
            overwrite=overwrite,
            seed=seed,
            progress=progress_callback(bar),
            text_norm=text_norm,
        )


class AsrCtcHooks(RecipeHooks):
    name = TASK_NAME
    config_class = AsrCtcConfig
    tiny_data_note = "the synthetic espeak-ng corpus"

    baseline = ("kd.method=ctc",)  # plain CTC on the full model (no student head, no KD)
    prep = staticmethod(prep_stage)

    def make_task(self, cfg: AsrCtcConfig, data_dir: str) -> AsrCtcTask:
        return AsrCtcTask(cfg, data_dir)

    def summary_extra(self, cfg: AsrCtcConfig, data_dir: str) -> dict:
        return {"kd_method": cfg.kd.method, "system": cfg.system_label}

    def evaluate_run(self, trained: Trained, opts: StageOptions) -> dict:
        """Each set of ``--split`` scored on its own (a set name, a role, ``all`` or ``auto``).

        The result always has ``sets`` ({name: metrics}); with one set its metrics are also at the top
        level (``wer``, ``cer``, ``wer_student``...), as before sets were kept apart."""
        cfg, task, model, run = trained.cfg, trained.task, trained.model, trained.run
        split = opts.extra.get("split") or "auto"
        if split == "auto":
            split = "test" if task.data.test else "dev"
        sets = task.data.eval_sets(split)
        dev = next(model.parameters()).device
        total = sum(-(-len(rows) // cfg.train.batch_size) for rows in sets.values())
        with progress_bar(transient=True) as bar:
            bar_id = bar.add_task(f"decode {', '.join(sets)}", total=total, info="")
            scored = score_eval_sets(model, task, sets, dev, keep_posteriors=1, on_batch=lambda: bar.advance(bar_id))
        decoder = "greedy" if cfg.eval.beam_size <= 1 else f"beam{cfg.eval.beam_size}"
        result = {
            "task": TASK_NAME,
            "run_dir": str(run.path),
            "split": split,
            "system": cfg.system_label,
            "head": cfg.export_head,
            "decoder": decoder,
            "weights": str(run.weights_for_eval()),
        }
        if len(sets) == 1:
            ((name, metrics),) = scored["sets"].items()
            result.update({"set": name, **metrics})
        result["sets"] = scored["sets"]
        if scored["posteriors"]:
            post = scored["posteriors"][0]
            symbols = [task.tokenizer.decode([i]) or "?" for i in range(task.tokenizer.vocab_size)]
            symbols[0] = "<b>"
            png = plot_posteriors(
                post["teacher"],
                post["student"],
                run.plots / "posteriors.png",
                symbols=symbols,
                title=f"{post['id']}: teacher (layer {model.teacher_layer}) vs student (layer {model.student_layer})",
            )
            result["posterior_plot"] = str(png)
        result["examples"] = [
            {"set": next(iter(sets)), "ref": r, "hyp": h}
            for r, h in list(zip(scored["refs"], scored["hyps"][cfg.export_head]))[:5]
        ]
        return result

    def export_spec(self, trained: Trained, opts: StageOptions) -> ExportSpec:
        cfg, task = trained.cfg, trained.task
        inference = CTCInference(trained.model, cfg.export_head).eval()
        rows = (task.data.dev or task.data.train)[:5]
        ds = AsrDataset(rows, task.tokenizer, task.features)
        # Example batch of 2 (a batch of 1 would be specialised as a constant); parity on a batch of a
        # different size and length, so the dynamic dimensions are exercised.
        example = collate_asr([ds[i] for i in range(min(2, len(ds)))])
        parity = collate_asr([ds[i] for i in range(len(ds))])
        single = collate_asr([ds[len(ds) - 1]])
        # Inputs shorter than ~0.1 s are not supported by the exported program (the encoders' strided
        # convolutions need a few frames); the upper bound is only a sanity limit (~20 minutes).
        if cfg.data.feature == "waveform":
            # transformers' HuBERT/WavLM attention-mask code yields guards (e.g. (T'-1)^2 > 1) that the
            # symbolic solver cannot prove for an explicit range; AUTO lets export derive the range.
            seq = torch.export.Dim.AUTO
        else:
            seq = torch.export.Dim("frames", min=16, max=120_000)
        batch = torch.export.Dim("batch", min=1, max=1024)

        def write_files(folder: Path) -> dict:
            task.tokenizer.save(folder / "tokenizer")
            return {"tokenizer": "tokenizer"}

        return ExportSpec(
            inference,
            (example["features"], example["feature_lengths"]),
            dynamic_shapes=({0: batch, 1: seq}, {0: batch}),
            parity_inputs=[
                (parity["features"], parity["feature_lengths"]),
                (single["features"], single["feature_lengths"]),
            ],
            manifest={
                "head": cfg.export_head,
                "layers": inference.layer,
                "features": task.features.to_dict(),
                "inputs": [
                    "features (B, T, F) float32" if cfg.data.feature == "fbank" else "waveform (B, S) float32",
                    "lengths (B,) int64",
                ],
                "outputs": ["log_probs (B, T', V)", "out_lengths (B,)"],
                "blank_id": 0,
            },
            write_files=write_files,
            result_keys=("head", "layers"),
        )

    def pipeline(self, p: Pipeline) -> dict:
        """The whole pipeline on the embedded tiny default (a synthetic espeak-ng corpus)."""
        trained, evaluated, exported = p.train(), p.evaluate(), p.export()
        result = {
            "task": TASK_NAME,
            "run_dir": str(p.run.path),
            "kd_method": trained["kd_method"],
            "system": trained["system"],
            "steps": trained["steps"],
            "train_seconds": trained["train_seconds"],
            "split": evaluated["split"],
            "head": evaluated["head"],
            "wer": evaluated["wer"],
            "cer": evaluated["cer"],
            **{k: evaluated[k] for k in ("wer_teacher", "cer_teacher", "wer_student", "cer_student") if k in evaluated},
            "export_dir": exported["export_dir"],
            "parity_max_abs_diff": exported["parity_max_abs_diff"],
        }
        if "spike_timing" in evaluated:
            result["spike_mean_offset_frames"] = evaluated["spike_timing"].get("mean_offset")
        return result

    def report(self, command: str, result: dict):
        if command == "eval" and len(result.get("sets", {})) > 1:
            return per_set_table(result)
        if command not in ("eval", "run"):
            return None
        heads = [h for h in ("student", "teacher") if f"wer_{h}" in result]
        rows = [
            [h + (" (exported)" if h == result.get("head") else ""), result[f"wer_{h}"], result[f"cer_{h}"]]
            for h in heads
        ]
        where = result.get("set") or result.get("split", "")
        return metric_table(
            f"asr-ctc {command}: {where} set", ["head", "WER", "CER"], rows, caption=result.get("system")
        )


def transcribe_stage(model_path: str, files: list[str], beam_size: int = 1) -> dict:
    module, manifest, folder = load_exported(model_path, TASK_NAME)
    tokenizer = load_tokenizer(folder / manifest["tokenizer"])
    feats_cfg = FeatureConfig.from_dict(manifest["features"])
    results = []
    for f in files:
        wave = read_audio(f, feats_cfg.sample_rate)
        feats = compute_features(wave, feats_cfg)
        with torch.no_grad():
            log_probs, out_lengths = module(feats.unsqueeze(0), torch.tensor([feats.shape[0]]))
        lp = log_probs[0, : int(out_lengths[0])]
        ids = beam_ctc_decode(lp, beam_size) if beam_size > 1 else greedy_ctc_decode(lp.unsqueeze(0))[0]
        results.append(
            {"file": str(f), "text": tokenizer.decode(ids), "seconds": round(wave.shape[0] / feats_cfg.sample_rate, 3)}
        )
    return {"model": str(folder), "transcripts": results}
