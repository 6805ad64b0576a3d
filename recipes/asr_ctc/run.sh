#!/usr/bin/env bash
# asr-ctc on LibriSpeech: data -> SKD / plain-CTC / InterCTC training -> eval -> export -> table.
#
# Usage (from the repository root):
#   recipes/asr_ctc/run.sh [--stage N] [--stop-stage M] [--config YAML] [--data-root DIR]
#                          [--data DIR] [--runs DIR] [--device cuda|cpu] [--ngpu N]
#                          [--seeds "0 1 2"] [--eval-splits "all"] [--beam-size N]
#                          [--train-args "..."] [--overwrite]
#   Each flag has an environment-variable twin (DATA_ROOT, DATA, RUNS, DEVICE, NGPU, CONFIG,
#   SEEDS, EVAL_SPLITS, BEAM_SIZE, TRAIN_ARGS, OVERWRITE=1); a flag wins over the variable
#   (recipes/common.sh parses them).
#
# Stages (ESPnet style: runs stages N..M, default 0..6):
#   0  download + extract + prep LibriSpeech (data_scripts/librispeech.sh: train-clean-100,
#      dev-clean, dev-other, test-clean, test-other, each its own named set; char tokenizer)
#   1  train SKD                  -> $RUNS/skd_seed<S>
#   2  train plain CTC (--baseline, teacher head only)  -> $RUNS/ctc_seed<S>
#   3  train InterCTC (--set kd.method=interctc: standard InterCTC, both CTC heads, constant weight
#      kd.interctc_weight = 0.3 on the intermediate one, no KL)  -> $RUNS/interctc_seed<S>
#   4  eval all runs on EVAL_SPLITS (default all: every dev and test set, WER per set; both heads'
#      WER/CER, spike timing)  -> $RUNS/results/<run>.<split>.eval.json
#   5  export each run's eval.head (student for skd/interctc, teacher for ctc) and transcribe one
#      test utterance with the SKD export as a smoke test  -> <run>/export, $RUNS/results/<run>.export.json
#   6  print the results per run, then per set the mean ± std over seeds (results_table, recipes/common.sh)
#
# Examples:
#   recipes/asr_ctc/run.sh                                           # everything, 1 GPU, seed 0
#   recipes/asr_ctc/run.sh --stage 1 --stop-stage 1 --ngpu 4         # SKD only, torchrun on 4 GPUs
#   SEEDS="0 1 2" recipes/asr_ctc/run.sh --stage 1                   # three seeds of each system
#   recipes/asr_ctc/run.sh --config recipes/asr_ctc/hubert_librispeech.yaml --runs runs/hubert \
#       --train-args "--set model.pretrained=/data/models/hubert-base-ls960" --stage 1
#
# Re-running is safe: a finished run is skipped, an unfinished one is continued with --resume,
# and --overwrite starts runs (and the prep) over. TRAIN_ARGS are added to fresh training runs
# only (--resume keeps the run's own config.yaml).
set -euo pipefail

# -- settings (each has a --flag and an environment twin; see recipes/common.sh) ---------------------
DATA_ROOT=${DATA_ROOT:-data/librispeech_raw}         # downloaded archives + extracted LibriSpeech/
DATA=${DATA:-data/librispeech}                       # the prepared dataset (skd asr-ctc prep --out)
RUNS=${RUNS:-runs/asr_ctc_librispeech}               # one run directory per system and seed
CONFIG=${CONFIG:-recipes/asr_ctc/librispeech.yaml}
EVAL_SPLITS=${EVAL_SPLITS:-all}                      # all | test | dev | a set name (test-other ...)
BEAM_SIZE=${BEAM_SIZE:-1}                            # 1 = greedy CTC; > 1 = prefix beam search, no LM
STOP_STAGE=${STOP_STAGE:-6}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"  # options, run_stage, log, die, skd_train, to_file, results_table

RESULTS=$RUNS/results
METHODS="skd ctc interctc"
train() {  # train NAME SEED [extra skd asr-ctc train args...]
  local name=$1 seed=$2
  shift 2
  skd_train asr-ctc "$RUNS/${name}_seed$seed" "$DATA" "$seed" "$@"
}

# -- stage 0: data ------------------------------------------------------------------------------
if run_stage 0; then
  log "stage 0: LibriSpeech download + prep -> $DATA"
  prep_flags=()
  [[ $OVERWRITE == 1 ]] && prep_flags+=(--overwrite)
  DATA_ROOT=$DATA_ROOT OUT=$DATA SPLITS="train-clean-100 dev-clean dev-other test-clean test-other" TOKENIZER=char SKD=$SKD \
    bash "$ROOT/data_scripts/librispeech.sh" ${prep_flags[@]+"${prep_flags[@]}"}
fi

# -- stages 1-3: training -------------------------------------------------------------------------
for seed in $SEEDS; do
  if run_stage 1; then log "stage 1: SKD, seed $seed"; train skd "$seed"; fi
  if run_stage 2; then log "stage 2: plain CTC baseline, seed $seed"; train ctc "$seed" --baseline; fi
  if run_stage 3; then log "stage 3: InterCTC, seed $seed"; train interctc "$seed" --set kd.method=interctc; fi
done

# -- stage 4: eval ----------------------------------------------------------------------------------
evaluate() {  # evaluate RUN_DIR: every split of EVAL_SPLITS
  local split
  for split in $EVAL_SPLITS; do
    log "stage 4: eval $1 on $split (beam $BEAM_SIZE)"
    # eval also writes $1/eval.json (the last split evaluated); keep one copy per split
    to_file "$RESULTS/$(basename "$1").$split.eval.json" \
      "$SKD" asr-ctc eval --run-dir "$1" --split "$split" --beam-size "$BEAM_SIZE" --device "$DEVICE" --json
  done
}
if run_stage 4; then each_finished_run "$METHODS" evaluate; fi

# -- stage 5: export ----------------------------------------------------------------------------------
export_run() { log "stage 5: export $1"; to_file "$RESULTS/$(basename "$1").export.json" "$SKD" asr-ctc export --run-dir "$1" --overwrite --json; }
if run_stage 5; then
  each_finished_run "$METHODS" export_run
  first_seed=${SEEDS%% *}
  if [[ -d $RUNS/skd_seed$first_seed/export ]]; then
    wav=$(python -c 'import json, sys
for split in ("test", "dev"):
    with open(f"{sys.argv[1]}/{split}.jsonl") as f:
        line = f.readline()
    if line:
        print(json.loads(line)["audio"]); break' "$DATA")
    if [[ -n $wav ]]; then
      log "stage 5: transcribing $wav with the exported SKD student alone"
      "$SKD" asr-ctc transcribe "$wav" --model "$RUNS/skd_seed$first_seed/export"
    fi
  fi
fi

# -- stage 6: comparison table ---------------------------------------------------------------------
if run_stage 6; then
  [[ -d $RESULTS ]] || die "stage 6: no results in $RESULTS (run stage 4 first)"
  python - "$RESULTS" <<'EOF'
import json
import sys
from pathlib import Path

results = Path(sys.argv[1])
rows = []
for path in sorted(results.glob("*.eval.json")):
    run = path.name[: -len(".eval.json")].rsplit(".", 1)[0]
    method, _, seed = run.rpartition("_seed")
    r = json.loads(path.read_text())
    export = results / f"{run}.export.json"
    exp = json.loads(export.read_text()) if export.is_file() else {}
    # one row per named set (test-clean, test-other, ...); results written before sets: the split
    per_set = r.get("sets") or {r["split"]: r}
    for name, m in per_set.items():
        spikes = m.get("spike_timing") or {}
        rows.append({"method": method, "seed": seed, "split": name, "head": r["head"],
                     "layers": exp.get("layers"), "params": exp.get("parameters"), "decoder": r["decoder"],
                     "wer": m["wer"], "cer": m["cer"], "wer_teacher": m.get("wer_teacher"),
                     "wer_student": m.get("wer_student"), "spike_offset": spikes.get("mean_offset"),
                     "spike_overlap": spikes.get("mean_overlap")})
if not rows:
    sys.exit(f"no *.eval.json files in {results}")


def pct(v):
    return "-" if v is None else f"{100 * v:.2f}"


def num(v, fmt="{:.2f}"):
    return "-" if v is None else fmt.format(v)


header = ["system", "seed", "split", "head", "layers", "params(M)", "decoder", "WER%", "CER%",
          "WER% teacher", "WER% student", "spike offset", "spike overlap"]
table = [[r["method"], r["seed"], r["split"], r["head"], num(r["layers"], "{}"),
          num(r["params"] and r["params"] / 1e6), r["decoder"], pct(r["wer"]), pct(r["cer"]),
          pct(r["wer_teacher"]), pct(r["wer_student"]), num(r["spike_offset"]), num(r["spike_overlap"], "{:.3f}")]
         for r in sorted(rows, key=lambda r: (r["split"], r["method"], r["seed"]))]
widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
fmt_row = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))
print("\nPer run (WER/CER of the exported head; spike offset in frames, PROPOSAL definition):")
print(fmt_row(header))
for line in table:
    print(fmt_row(line))
EOF
  printf '\nMean ± std over seeds, per set:\n'
  results_table "$RESULTS" --glob '*.eval.json' --each sets=split --sort split --metric 'WER%=wer:100' \
    --metric 'WER% teacher=wer_teacher:100' --metric 'WER% student=wer_student:100' \
    --caption "skd/interctc report the student head (first model.student_layer layers) as WER%; ctc the full model;
interctc is the standard InterCTC (constant weight kd.interctc_weight = 0.3 on the student CTC)."
fi
