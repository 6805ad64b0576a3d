#!/usr/bin/env bash
# nlp-embed on PTB or WikiText-2: prep -> SKD / plain CE / uniform LS / random-noise control, over
# seeds -> eval (perplexity, NLL, ECE/MCE) -> export -> comparison table (mean ± std over seeds).
#
# Usage (from the repository root):
#   recipes/nlp_embed/run.sh [--stage N] [--stop-stage M] [--source ptb|wikitext2|synthetic]
#                            [--raw DIR] [--data DIR] [--config YAML] [--runs DIR] [--device cuda|cpu]
#                            [--ngpu N] [--seeds "0 1 2"] [--train-args "..."] [--overwrite]
#   Each flag has an environment-variable twin (SOURCE, RAW, DATA, CONFIG, RUNS, DEVICE, NGPU, SEEDS,
#   TRAIN_ARGS, OVERWRITE=1); a flag wins over the variable.
#
# Stages (default 0..4):
#   0  skd nlp-embed prep --source $SOURCE --raw $RAW --out $DATA   (you supply the corpus files:
#      ptb.{train,valid,test}.txt or wiki.{train,valid,test}.tokens; nothing is downloaded)
#   1  train each system and seed -> $RUNS/<system>_seed<S>; systems: skd, ce (--baseline),
#      ls (--set kd.method=ls), noise (--set kd.method=noise)
#   2  eval every finished run on test -> $RUNS/results/<run>.test.eval.json (+ plots/reliability.png)
#   3  export the SKD runs and sample from the first one
#   4  print the comparison table
#
# Examples:
#   recipes/nlp_embed/run.sh --source ptb --raw /data/ptb                       # PTB, 1 GPU, seed 0
#   SEEDS="0 1 2" recipes/nlp_embed/run.sh --source wikitext2 --raw /data/wikitext-2 \
#       --config recipes/nlp_embed/wikitext2.yaml --data data/wt2 --runs runs/wt2
#   recipes/nlp_embed/run.sh --source synthetic --config recipes/nlp_embed/tiny.yaml --device cpu \
#       --seeds "0 1 2" --runs runs/nlp_embed_tiny                              # the tiny table of README §9
#
# Re-running is safe: a finished run is skipped, an unfinished one is continued with --resume, and
# --overwrite starts runs (and the prep) over.
set -euo pipefail

SOURCE=${SOURCE:-ptb}
RAW=${RAW:-data/ptb_raw}
DATA=${DATA:-data/nlp_embed_$SOURCE}
CONFIG=${CONFIG:-recipes/nlp_embed/ptb.yaml}
RUNS=${RUNS:-runs/nlp_embed_$SOURCE}
DEVICE=${DEVICE:-cuda}
NGPU=${NGPU:-1}
SEEDS=${SEEDS:-0}
TRAIN_ARGS=${TRAIN_ARGS:-}
OVERWRITE=${OVERWRITE:-0}
SYSTEMS=${SYSTEMS:-"skd ce ls noise"}
SKD=${SKD:-skd}
stage=0
stop_stage=4

die() { echo "run.sh: error: $*" >&2; exit 1; }
log() { echo "run.sh: $*" >&2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --stage)      stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --source)     SOURCE=$2; shift 2 ;;
    --raw)        RAW=$2; shift 2 ;;
    --data)       DATA=$2; shift 2 ;;
    --config)     CONFIG=$2; shift 2 ;;
    --runs)       RUNS=$2; shift 2 ;;
    --device)     DEVICE=$2; shift 2 ;;
    --ngpu)       NGPU=$2; shift 2 ;;
    --seeds)      SEEDS=$2; shift 2 ;;
    --train-args) TRAIN_ARGS=$2; shift 2 ;;
    --overwrite)  OVERWRITE=1; shift ;;
    -h|--help)    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *)            die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ $stage =~ ^[0-9]+$ && $stop_stage =~ ^[0-9]+$ ]] || die "--stage/--stop-stage take integers"
run_stage() { [[ $stage -le $1 && $stop_stage -ge $1 ]]; }
RESULTS=$RUNS/results
read -r -a train_extra <<< "$TRAIN_ARGS"

system_args() {  # the train flags that make each system
  case "$1" in
    skd)   ;;
    ce)    echo "--baseline" ;;
    ls)    echo "--set kd.method=ls" ;;
    noise) echo "--set kd.method=noise" ;;
    *)     die "unknown system '$1'" ;;
  esac
}

train() {  # train SYSTEM SEED
  local name=$1 seed=$2 rd=$RUNS/$1_seed$2
  local launcher=("$SKD")
  [[ $NGPU -gt 1 ]] && launcher=(torchrun --standalone --nproc-per-node "$NGPU" -m skdcli)
  if [[ -f $rd/train_summary.json && $OVERWRITE != 1 ]]; then
    log "$name seed $seed: finished run in $rd, skipping (--overwrite to retrain)"; return
  fi
  if [[ -f $rd/config.yaml && $OVERWRITE != 1 ]]; then
    log "$name seed $seed: unfinished run in $rd, resuming"
    "${launcher[@]}" nlp-embed train --run-dir "$rd" --data "$DATA" --resume --device "$DEVICE"; return
  fi
  local args=(nlp-embed train --config "$CONFIG" --data "$DATA" --run-dir "$rd" --seed "$seed" --device "$DEVICE")
  read -r -a sys_args <<< "$(system_args "$name")"
  args+=(${sys_args[@]+"${sys_args[@]}"} ${train_extra[@]+"${train_extra[@]}"})
  [[ $OVERWRITE == 1 ]] && args+=(--overwrite)
  log "$name seed $seed: ${launcher[*]} ${args[*]}"
  "${launcher[@]}" "${args[@]}"
}

to_file() {  # to_file DEST cmd...: write the command's stdout to DEST only if it succeeds
  local dest=$1; shift
  "$@" > "$dest.tmp"
  mv "$dest.tmp" "$dest"
}

if run_stage 0; then
  log "stage 0: prep $SOURCE ($RAW) -> $DATA"
  prep=(nlp-embed prep --source "$SOURCE" --out "$DATA")
  [[ $SOURCE != synthetic ]] && prep+=(--raw "$RAW")
  if [[ -f $DATA/prep.json && $OVERWRITE != 1 ]]; then
    log "stage 0: $DATA already prepared, skipping"
  else
    [[ $OVERWRITE == 1 ]] && prep+=(--overwrite)
    "$SKD" "${prep[@]}"
  fi
fi

for seed in $SEEDS; do
  for system in $SYSTEMS; do
    if run_stage 1; then log "stage 1: $system, seed $seed"; train "$system" "$seed"; fi
  done
done

if run_stage 2; then
  mkdir -p "$RESULTS"
  for system in $SYSTEMS; do
    for seed in $SEEDS; do
      rd=$RUNS/${system}_seed$seed
      [[ -f $rd/train_summary.json ]] || { log "stage 2: no finished run in $rd, skipping"; continue; }
      log "stage 2: eval $rd on test"
      to_file "$RESULTS/${system}_seed$seed.test.eval.json" "$SKD" nlp-embed eval --run-dir "$rd" --split test --device "$DEVICE" --json
    done
  done
fi

if run_stage 3; then
  first_seed=${SEEDS%% *}
  for seed in $SEEDS; do
    rd=$RUNS/skd_seed$seed
    [[ -f $rd/train_summary.json ]] || continue
    log "stage 3: export $rd"
    "$SKD" nlp-embed export --run-dir "$rd" --overwrite --json > /dev/null
  done
  if [[ -d $RUNS/skd_seed$first_seed/export ]]; then
    "$SKD" nlp-embed sample --model "$RUNS/skd_seed$first_seed/export" --prompt "the" --top-k 40 --num-samples 3
  fi
fi

if run_stage 4; then
  [[ -d $RESULTS ]] || die "stage 4: no results in $RESULTS (run stage 2 first)"
  python - "$RESULTS" <<'PY'
import json, statistics, sys
from collections import defaultdict
from pathlib import Path

groups = defaultdict(list)
for path in sorted(Path(sys.argv[1]).glob("*.test.eval.json")):
    system = path.name.split("_seed")[0]
    groups[system].append(json.loads(path.read_text()))
if not groups:
    sys.exit(f"no *.test.eval.json in {sys.argv[1]}")

def cell(rows, key, scale=1.0):
    vals = [scale * r[key] for r in rows]
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.2f} ± {sd:.2f}"

print(f"{'system':8s} {'n':>2s}  {'test ppl':>16s}  {'NLL':>12s}  {'ECE %':>12s}  {'MCE %':>14s}  {'acc %':>12s}")
for system in ("skd", "ce", "ls", "noise", *sorted(set(groups) - {"skd", "ce", "ls", "noise"})):
    rows = groups.get(system)
    if rows:
        print(f"{system:8s} {len(rows):>2d}  {cell(rows, 'ppl'):>16s}  {cell(rows, 'nll'):>12s}  "
              f"{cell(rows, 'ece', 100):>12s}  {cell(rows, 'mce', 100):>14s}  {cell(rows, 'accuracy', 100):>12s}")
PY
fi
