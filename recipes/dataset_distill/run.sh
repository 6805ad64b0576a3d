#!/usr/bin/env bash
# Generative dataset distillation with self-KD (Li et al., ICASSP 2025) on the DiM pipeline: stage cgan,
# then stage match with the self-KD term and without it (--baseline = DiM's MSE logit matching), N seeds,
# evaluated at IPC 1/10/50 on ConvNet-3 and ResNet-18 in both modes, next to random real subsets and the
# full real train split.
#
# Usage (from the repository root):
#   recipes/dataset_distill/run.sh [--dataset cifar10|mnist|fashion_mnist] [--stage N] [--stop-stage M]
#       [--data-root DIR] [--runs DIR] [--device cuda|cpu] [--seeds "0 1 2"] [--train-args "..."] [--overwrite]
#   Environment twins: DATASET, DATA_ROOT, RUNS, DEVICE, SEEDS, TRAIN_ARGS, OVERWRITE=1 (recipes/common.sh).
#
# Stages (default 0..5):
#   0  data: data_scripts/dataset_distill.sh (download, MD5 check, `skd dataset-distill prep`)
#   1  stage cgan for each seed -> $RUNS/cgan_seed<S>   (recipes/dataset_distill/<dataset>_cgan.yaml)
#   2  stage match for each seed from its cgan run: skd_seed<S> (self-KD) and dim_seed<S> (--baseline)
#   3  eval every finished match run -> $RUNS/results/<run>.json (the first skd run also trains the
#      random-real and full-real references, --references)
#   4  export the first seed's SKD generator, a sample grid of class 3, a fixed-seed IPC-10 set
#   5  table: mean ± sample std over seeds of each cell's top-1
#
# Re-running is safe: finished runs are skipped, unfinished ones resumed (both stages resume exactly).
set -euo pipefail

DATASET=${DATASET:-cifar10}
DATA_ROOT=${DATA_ROOT:-data}
RUNS=${RUNS:-runs/dd_${DATASET}}
SEEDS=${SEEDS:-"0 1 2"}
STOP_STAGE=${STOP_STAGE:-5}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"  # options, run_stage, log, die, skd_train, to_file, results_table

DATA=$DATA_ROOT/dd_$DATASET
RESULTS=$RUNS/results
EVAL_ARGS=(--ipc 1,10,50 --arch convnet,resnet18 --mode fixed,on_the_fly --device "$DEVICE" --json)
case $DATASET in cifar10|mnist|fashion_mnist) ;; *) die "--dataset must be cifar10, mnist or fashion_mnist" ;; esac

if run_stage 0; then
  flags=()
  [[ $OVERWRITE == 1 ]] && flags+=(-- --overwrite)
  DATA_ROOT=$DATA_ROOT/raw OUT=$DATA_ROOT SKD=$SKD bash "$ROOT/data_scripts/dataset_distill.sh" "${DATASET//_/-}" \
    ${flags[@]+"${flags[@]}"}
fi

if run_stage 1; then
  [[ -f $DATA/prep.json ]] || die "no prepared dataset in $DATA (stage 0)"
  for seed in $SEEDS; do
    CONFIG=recipes/dataset_distill/${DATASET}_cgan.yaml skd_train dataset-distill "$RUNS/cgan_seed$seed" "$DATA" "$seed"
  done
fi

if run_stage 2; then
  for seed in $SEEDS; do
    cgan=$RUNS/cgan_seed$seed
    [[ -f $cgan/train_summary.json ]] || die "$cgan: stage 1 has not finished"
    CONFIG=recipes/dataset_distill/${DATASET}_match.yaml skd_train dataset-distill "$RUNS/skd_seed$seed" "$DATA" \
      "$seed" --init "$cgan"
    CONFIG=recipes/dataset_distill/${DATASET}_match.yaml skd_train dataset-distill "$RUNS/dim_seed$seed" "$DATA" \
      "$seed" --init "$cgan" --baseline
  done
fi

first=${SEEDS%% *}
evaluate() {
  local refs=()
  [[ $(basename "$1") == "skd_seed$first" ]] && refs=(--references)
  to_file "$RESULTS/$(basename "$1").json" "$SKD" dataset-distill eval --run-dir "$1" "${EVAL_ARGS[@]}" \
    ${refs[@]+"${refs[@]}"}
}
if run_stage 3; then each_finished_run "skd dim" evaluate; fi

if run_stage 4; then
  rd=$RUNS/skd_seed$first
  "$SKD" dataset-distill export --run-dir "$rd" --overwrite
  "$SKD" dataset-distill sample --model "$rd/export" --class 3 --n 16 --out "$RUNS/samples/class3.png" --overwrite
  "$SKD" dataset-distill generate --run-dir "$rd" --ipc 10 --fixed-seed 0 --out "$RUNS/generated_ipc10" --overwrite
fi

if run_stage 5; then
  [[ -d $RESULTS ]] || die "no results in $RESULTS (stage 3 first)"
  results_table "$RESULTS" --group '(?P<run>.+)_seed\d+' --each rows --by-key system,arch,IPC=ipc,mode \
    --metric 'top-1 %=top1_mean' \
    --caption "skd/dim generator: mean ± sample std over seeds of each run's mean over its eval.repeats models; \
random/full real (references, in the first skd run): over that run's repeats; last epoch, real test split"
fi
