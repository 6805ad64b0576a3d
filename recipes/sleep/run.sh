#!/usr/bin/env bash
# SST cross-dataset: train on SHHS1, test on Sleep-EDF-20; SKD + selective sampling vs ablations,
# N seeds each, mean ± std (the paper's robustness figure).
#
# Usage (from the repository root):
#   recipes/sleep/run.sh [--stage N] [--stop-stage M] [--config YAML] [--data-root DIR]
#                        [--shhs-raw DIR] [--runs DIR] [--device cuda|cpu] [--ngpu N]
#                        [--seeds "0 1 2 3 4"] [--train-args "..."] [--overwrite]
#   Environment twins: CONFIG, DATA_ROOT, SHHS_RAW, RUNS, DEVICE, NGPU, SEEDS, TRAIN_ARGS, OVERWRITE=1.
#
# Stages (default 0..5):
#   0  data: data_scripts/sleep_data.sh (Sleep-EDF-20 download + prep; SHHS prep from --shhs-raw,
#      which you download from NSRR yourself)
#   1  train each system for each seed on SHHS -> $RUNS/<system>_seed<S>
#        sst        SKD + selective batch sampling (the method)
#        baseline   --baseline: plain CE, random batches
#        skd_random SKD with random batches (ablation: sampler off)
#        ce_select  CE with selective batches (ablation: self-KD off)
#   2  eval --cross-dataset on Sleep-EDF-20 -> $RUNS/results/<run>.json
#   3  export the first seed's SST and stage one Sleep-EDF night with it (CSV + EDF+ + PNG)
#   4  table: mean ± sample std over seeds of acc / macro-F1 / kappa / per-stage F1
#
# Re-running is safe: finished runs are skipped, unfinished ones resumed.
set -euo pipefail

CONFIG=${CONFIG:-recipes/sleep/shhs.yaml}
DATA_ROOT=${DATA_ROOT:-data/sleep}
SHHS_RAW=${SHHS_RAW:-}
RUNS=${RUNS:-runs/sleep_shhs_to_sedf}
DEVICE=${DEVICE:-cuda}
NGPU=${NGPU:-1}
SEEDS=${SEEDS:-"0 1 2 3 4"}
TRAIN_ARGS=${TRAIN_ARGS:-}
OVERWRITE=${OVERWRITE:-0}
SKD=${SKD:-skd}
stage=0
stop_stage=4
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

die() { echo "run.sh: error: $*" >&2; exit 1; }
log() { echo "run.sh: $*" >&2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --stage)      stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --config)     CONFIG=$2; shift 2 ;;
    --data-root)  DATA_ROOT=$2; shift 2 ;;
    --shhs-raw)   SHHS_RAW=$2; shift 2 ;;
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

SHHS=$DATA_ROOT/prepared/shhs
SEDF=$DATA_ROOT/prepared/sleep_edf
RESULTS=$RUNS/results
read -r -a train_extra <<< "$TRAIN_ARGS"
declare -A SYSTEM_ARGS=([sst]="" [baseline]="--baseline" [skd_random]="--sampler random" [ce_select]="--baseline --sampler selective")
SYSTEMS="sst baseline skd_random ce_select"

train() {  # train SYSTEM SEED
  local name=$1 seed=$2 rd=$RUNS/${1}_seed$2
  local launcher=("$SKD")
  [[ $NGPU -gt 1 ]] && launcher=(torchrun --standalone --nproc-per-node "$NGPU" -m skdcli)
  if [[ -f $rd/train_summary.json && $OVERWRITE != 1 ]]; then log "$rd finished, skipping"; return; fi
  if [[ -f $rd/config.yaml && $OVERWRITE != 1 ]]; then
    "${launcher[@]}" sleep train --run-dir "$rd" --data "$SHHS" --resume --device "$DEVICE"; return
  fi
  read -r -a sys_args <<< "${SYSTEM_ARGS[$name]}"
  local args=(sleep train --config "$CONFIG" --data "$SHHS" --run-dir "$rd" --seed "$seed" --device "$DEVICE"
              ${sys_args[@]+"${sys_args[@]}"} ${train_extra[@]+"${train_extra[@]}"})
  [[ $OVERWRITE == 1 ]] && args+=(--overwrite)
  log "${launcher[*]} ${args[*]}"
  "${launcher[@]}" "${args[@]}"
}

if run_stage 0; then
  flags=()
  [[ -n $SHHS_RAW ]] && flags+=(--shhs-raw "$SHHS_RAW")
  [[ $OVERWRITE == 1 ]] && flags+=(--overwrite)
  DATA_ROOT=$DATA_ROOT SKD=$SKD bash "$ROOT/data_scripts/sleep_data.sh" ${flags[@]+"${flags[@]}"}
fi

if run_stage 1; then
  [[ -f $SHHS/prep.json ]] || die "no prepared SHHS in $SHHS (stage 0 with --shhs-raw)"
  for seed in $SEEDS; do for sys in $SYSTEMS; do train "$sys" "$seed"; done; done
fi

if run_stage 2; then
  mkdir -p "$RESULTS"
  for sys in $SYSTEMS; do for seed in $SEEDS; do
    rd=$RUNS/${sys}_seed$seed
    [[ -f $rd/train_summary.json ]] || { log "no finished run in $rd"; continue; }
    "$SKD" sleep eval --cross-dataset --run-dir "$rd" --data "$SEDF" --device "$DEVICE" --json > "$RESULTS/${sys}_seed$seed.json.tmp"
    mv "$RESULTS/${sys}_seed$seed.json.tmp" "$RESULTS/${sys}_seed$seed.json"
  done; done
fi

if run_stage 3; then
  first=${SEEDS%% *}
  rd=$RUNS/sst_seed$first
  "$SKD" sleep export --run-dir "$rd" --overwrite
  psg=$(find "$DATA_ROOT/sleep-edf" -name 'SC4*-PSG.edf' | sort | head -n 1)
  if [[ -n $psg ]]; then
    hyp=$(find "$(dirname "$psg")" -name "$(basename "$psg" | cut -c1-6)*-Hypnogram.edf" | head -n 1)
    "$SKD" sleep score --model "$rd/export" --edf "$psg" --channel "EEG Fpz-Cz" --hypnogram "$hyp" \
      --out "$RUNS/score/$(basename "$psg" .edf).csv" --overwrite
  fi
fi

if run_stage 4; then
  [[ -d $RESULTS ]] || die "no results in $RESULTS (stage 2 first)"
  python3 - "$RESULTS" <<'PY'
import json, statistics, sys
from collections import defaultdict
from pathlib import Path
groups = defaultdict(list)
for p in sorted(Path(sys.argv[1]).glob("*_seed*.json")):
    groups[p.stem.rsplit("_seed", 1)[0]].append(json.loads(p.read_text()))
if not groups:
    sys.exit("no results")
fmt = lambda v: f"{100 * statistics.mean(v):.1f} ± {100 * (statistics.stdev(v) if len(v) > 1 else 0):.1f}"
print(f"{'system':12s} {'n':>2s} {'acc':>12s} {'macro-F1':>12s} {'kappa':>12s}  per-stage F1 (W N1 N2 N3 REM)")
for name, rows in groups.items():
    per = " ".join(fmt([r["per_class_f1"][s] for r in rows]) for s in ("W", "N1", "N2", "N3", "REM"))
    print(f"{name:12s} {len(rows):2d} {fmt([r['accuracy'] for r in rows]):>12s} {fmt([r['macro_f1'] for r in rows]):>12s} "
          f"{fmt([r['kappa'] for r in rows]):>12s}  {per}")
print("mean ± sample std (ddof=1) over seeds, in %; test = every Sleep-EDF-20 recording (cross-dataset)")
PY
fi
