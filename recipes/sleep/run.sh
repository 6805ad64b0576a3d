#!/usr/bin/env bash
# SST cross-dataset: train on SHHS1, test on Sleep-EDF-20; SKD + selective sampling vs ablations,
# N seeds each, mean ± std (the paper's robustness figure).
#
# Usage (from the repository root):
#   recipes/sleep/run.sh [--stage N] [--stop-stage M] [--config YAML] [--data-root DIR]
#                        [--shhs-raw DIR] [--runs DIR] [--device cuda|cpu] [--ngpu N]
#                        [--seeds "0 1 2 3 4"] [--train-args "..."] [--overwrite]
#   Environment twins: CONFIG, DATA_ROOT, SHHS_RAW, RUNS, DEVICE, NGPU, SEEDS, TRAIN_ARGS, OVERWRITE=1
#   (recipes/common.sh parses them; a flag wins over the variable).
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
SEEDS=${SEEDS:-"0 1 2 3 4"}
STOP_STAGE=${STOP_STAGE:-4}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"  # options, run_stage, log, die, skd_train, to_file, results_table

SHHS=$DATA_ROOT/prepared/shhs
SEDF=$DATA_ROOT/prepared/sleep_edf
RESULTS=$RUNS/results
declare -A SYSTEM_ARGS=([sst]="" [baseline]="--baseline" [skd_random]="--sampler random" [ce_select]="--baseline --sampler selective")
SYSTEMS="sst baseline skd_random ce_select"

train() {  # train SYSTEM SEED
  local sys_args
  read -r -a sys_args <<< "${SYSTEM_ARGS[$1]}"
  skd_train sleep "$RUNS/${1}_seed$2" "$SHHS" "$2" ${sys_args[@]+"${sys_args[@]}"}
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

evaluate() { to_file "$RESULTS/$(basename "$1").json" "$SKD" sleep eval --cross-dataset --run-dir "$1" --data "$SEDF" --device "$DEVICE" --json; }
if run_stage 2; then each_finished_run "$SYSTEMS" evaluate; fi

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
  stages=()
  for s in W N1 N2 N3 REM; do stages+=(--metric "F1 $s=per_class_f1.$s:100"); done
  results_table "$RESULTS" --digits 1 --metric acc=accuracy:100 --metric macro-F1=macro_f1:100 \
    --metric kappa=kappa:100 "${stages[@]}" \
    --caption "mean ± sample std (ddof=1) over seeds, in %; test = every Sleep-EDF-20 recording (cross-dataset)"
fi
