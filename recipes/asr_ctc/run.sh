#!/usr/bin/env bash
# asr-ctc on LibriSpeech: data -> SKD / plain-CTC / InterCTC training -> eval -> export -> table.
#
# Usage (from the repository root):
#   recipes/asr_ctc/run.sh [--stage N] [--stop-stage M] [--config YAML] [--data-root DIR]
#                          [--data DIR] [--runs DIR] [--device cuda|cpu] [--ngpu N]
#                          [--seeds "0 1 2"] [--eval-splits "dev test"] [--beam-size N]
#                          [--train-args "..."] [--overwrite]
#   Each flag has an environment-variable twin (DATA_ROOT, DATA, RUNS, DEVICE, NGPU, CONFIG,
#   SEEDS, EVAL_SPLITS, BEAM_SIZE, TRAIN_ARGS, OVERWRITE=1); a flag wins over the variable.
#
# Stages (ESPnet style: runs stages N..M, default 0..6):
#   0  download + extract + prep LibriSpeech (data_scripts/librispeech.sh: train-clean-100,
#      dev-clean, test-clean; char tokenizer)
#   1  train SKD                  -> $RUNS/skd_seed<S>
#   2  train plain CTC (--baseline, teacher head only)  -> $RUNS/ctc_seed<S>
#   3  train InterCTC (--set kd.method=interctc: standard InterCTC, both CTC heads, constant weight
#      kd.interctc_weight = 0.3 on the intermediate one, no KL)  -> $RUNS/interctc_seed<S>
#   4  eval all runs (both heads' WER/CER, spike timing)  -> $RUNS/results/<run>.<split>.eval.json
#   5  export each run's eval.head (student for skd/interctc, teacher for ctc) and transcribe one
#      test utterance with the SKD export as a smoke test  -> <run>/export, $RUNS/results/<run>.export.json
#   6  print a comparison table (mean ± std over seeds when several) from the results
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

# -- settings --------------------------------------------------------------------------------
DATA_ROOT=${DATA_ROOT:-data/librispeech_raw}         # downloaded archives + extracted LibriSpeech/
DATA=${DATA:-data/librispeech}                       # the prepared dataset (skd asr-ctc prep --out)
RUNS=${RUNS:-runs/asr_ctc_librispeech}               # one run directory per system and seed
DEVICE=${DEVICE:-cuda}
NGPU=${NGPU:-1}                                      # > 1: torchrun --nproc-per-node $NGPU (training)
CONFIG=${CONFIG:-recipes/asr_ctc/librispeech.yaml}
SEEDS=${SEEDS:-0}                                    # e.g. "0 1 2"
EVAL_SPLITS=${EVAL_SPLITS:-test}                     # any of: dev test
BEAM_SIZE=${BEAM_SIZE:-1}                            # 1 = greedy CTC; > 1 = prefix beam search, no LM
TRAIN_ARGS=${TRAIN_ARGS:-}                           # extra `skd asr-ctc train` args, e.g. "--set train.lr=5e-4"
OVERWRITE=${OVERWRITE:-0}
SKD=${SKD:-skd}
stage=0
stop_stage=6
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)   # repository root (for data_scripts/)

die() { echo "run.sh: error: $*" >&2; exit 1; }
log() { echo "run.sh: $*" >&2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --stage)       stage=$2; shift 2 ;;
    --stop-stage)  stop_stage=$2; shift 2 ;;
    --config)      CONFIG=$2; shift 2 ;;
    --data-root)   DATA_ROOT=$2; shift 2 ;;
    --data)        DATA=$2; shift 2 ;;
    --runs)        RUNS=$2; shift 2 ;;
    --device)      DEVICE=$2; shift 2 ;;
    --ngpu)        NGPU=$2; shift 2 ;;
    --seeds)       SEEDS=$2; shift 2 ;;
    --eval-splits) EVAL_SPLITS=$2; shift 2 ;;
    --beam-size)   BEAM_SIZE=$2; shift 2 ;;
    --train-args)  TRAIN_ARGS=$2; shift 2 ;;
    --overwrite)   OVERWRITE=1; shift ;;
    -h|--help)     sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *)             die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ $stage =~ ^[0-9]+$ && $stop_stage =~ ^[0-9]+$ ]] || die "--stage/--stop-stage take integers"

run_stage() { [[ $stage -le $1 && $stop_stage -ge $1 ]]; }
RESULTS=$RUNS/results
METHODS="skd ctc interctc"
read -r -a train_extra <<< "$TRAIN_ARGS"

# -- helpers ---------------------------------------------------------------------------------
train() {  # train NAME SEED [extra skd asr-ctc train args...]
  local name=$1 seed=$2
  shift 2
  local rd=$RUNS/${name}_seed$seed
  local launcher=("$SKD")
  if [[ $NGPU -gt 1 ]]; then
    launcher=(torchrun --standalone --nproc-per-node "$NGPU" -m skdcli)
  fi
  if [[ -f $rd/train_summary.json && $OVERWRITE != 1 ]]; then
    log "$name seed $seed: finished run in $rd, skipping (--overwrite to retrain)"
    return
  fi
  if [[ -f $rd/config.yaml && $OVERWRITE != 1 ]]; then
    log "$name seed $seed: unfinished run in $rd, resuming"
    "${launcher[@]}" asr-ctc train --run-dir "$rd" --data "$DATA" --resume --device "$DEVICE"
    return
  fi
  local args=(asr-ctc train --config "$CONFIG" --data "$DATA" --run-dir "$rd" --seed "$seed"
              --device "$DEVICE" "$@" ${train_extra[@]+"${train_extra[@]}"})
  [[ $OVERWRITE == 1 ]] && args+=(--overwrite)
  log "$name seed $seed: ${launcher[*]} ${args[*]}"
  "${launcher[@]}" "${args[@]}"
}

to_file() {  # to_file DEST cmd...: write the command's stdout to DEST only if it succeeds
  local dest=$1
  shift
  "$@" > "$dest.tmp"
  mv "$dest.tmp" "$dest"
}

# -- stage 0: data ------------------------------------------------------------------------------
if run_stage 0; then
  log "stage 0: LibriSpeech download + prep -> $DATA"
  prep_flags=()
  [[ $OVERWRITE == 1 ]] && prep_flags+=(--overwrite)
  DATA_ROOT=$DATA_ROOT OUT=$DATA SPLITS="train-clean-100 dev-clean test-clean" TOKENIZER=char SKD=$SKD \
    bash "$ROOT/data_scripts/librispeech.sh" ${prep_flags[@]+"${prep_flags[@]}"}
fi

# -- stages 1-3: training -------------------------------------------------------------------------
for seed in $SEEDS; do
  if run_stage 1; then log "stage 1: SKD, seed $seed"; train skd "$seed"; fi
  if run_stage 2; then log "stage 2: plain CTC baseline, seed $seed"; train ctc "$seed" --baseline; fi
  if run_stage 3; then log "stage 3: InterCTC, seed $seed"; train interctc "$seed" --set kd.method=interctc; fi
done

# -- stage 4: eval ----------------------------------------------------------------------------------
if run_stage 4; then
  mkdir -p "$RESULTS"
  for method in $METHODS; do
    for seed in $SEEDS; do
      rd=$RUNS/${method}_seed$seed
      [[ -f $rd/train_summary.json ]] || { log "stage 4: no finished run in $rd, skipping"; continue; }
      for split in $EVAL_SPLITS; do
        log "stage 4: eval $rd on $split (beam $BEAM_SIZE)"
        # eval also writes $rd/eval.json (the last split evaluated); keep one copy per split
        to_file "$RESULTS/${method}_seed$seed.$split.eval.json" \
          "$SKD" asr-ctc eval --run-dir "$rd" --split "$split" --beam-size "$BEAM_SIZE" --device "$DEVICE" --json
      done
    done
  done
fi

# -- stage 5: export ----------------------------------------------------------------------------------
if run_stage 5; then
  mkdir -p "$RESULTS"
  for method in $METHODS; do
    for seed in $SEEDS; do
      rd=$RUNS/${method}_seed$seed
      [[ -f $rd/train_summary.json ]] || { log "stage 5: no finished run in $rd, skipping"; continue; }
      log "stage 5: export $rd"
      to_file "$RESULTS/${method}_seed$seed.export.json" "$SKD" asr-ctc export --run-dir "$rd" --overwrite --json
    done
  done
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
import statistics
import sys
from collections import defaultdict
from pathlib import Path

results = Path(sys.argv[1])
rows = []
for path in sorted(results.glob("*.eval.json")):
    run, split = path.name[: -len(".eval.json")].rsplit(".", 1)
    method, _, seed = run.rpartition("_seed")
    r = json.loads(path.read_text())
    export = results / f"{run}.export.json"
    exp = json.loads(export.read_text()) if export.is_file() else {}
    spikes = r.get("spike_timing") or {}
    rows.append({"method": method, "seed": seed, "split": split, "head": r["head"],
                 "layers": exp.get("layers"), "params": exp.get("parameters"), "decoder": r["decoder"],
                 "wer": r["wer"], "cer": r["cer"], "wer_teacher": r.get("wer_teacher"),
                 "wer_student": r.get("wer_student"), "spike_offset": spikes.get("mean_offset"),
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

groups = defaultdict(list)
for r in rows:
    groups[(r["split"], r["method"])].append(r)
if any(len(g) > 1 for g in groups.values()):
    print("\nMean ± std over seeds:")
    for (split, method), g in sorted(groups.items()):
        cells = []
        for key in ("wer", "wer_teacher", "wer_student"):
            vals = [100 * x[key] for x in g if x[key] is not None]
            if not vals:
                cells.append(f"{key}=-")
                continue
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{key}={statistics.mean(vals):.2f}±{sd:.2f}")
        print(f"  {split:5s} {method:9s} n={len(g)}  " + "  ".join(cells))
print("\nskd/interctc report the student head (first model.student_layer layers) as WER%; ctc the full model.")
EOF
fi
