#!/usr/bin/env bash
# DRRNet-SKD vs the self-KD baselines on FUSAR-Ship or OpenSARShip: the method x backbone table
# (every --method on every backbone, N seeds each, mean ± sample std of top-1 and macro-F1 on the test split).
#
# Usage (from the repository root):
#   recipes/sar/run.sh [--stage N] [--stop-stage M] [--dataset fusar|opensarship] [--config YAML]
#                      [--data-root DIR] [--fusar-raw DIR] [--opensarship-raw DIR] [--runs DIR]
#                      [--methods "drrnet ce ..."] [--backbones "resnet18 ..."] [--seeds "0 1 2"]
#                      [--shots K] [--label-noise P] [--size 128] [--device cuda|cpu] [--train-args "..."] [--overwrite]
#   Environment twins: DATASET, CONFIG, DATA_ROOT, FUSAR_RAW, OPENSARSHIP_RAW, RUNS, METHODS, BACKBONES, SEEDS,
#   SHOTS, LABEL_NOISE, SIZE, DEVICE, TRAIN_ARGS, OVERWRITE=1, SKD.
#
# Stages (default 0..3):
#   0  data: data_scripts/sar.sh (prep of the FUSAR-Ship / OpenSARShip trees you downloaded after registering)
#   1  train every method x backbone x seed -> $RUNS/<backbone>/<method>_seed<S> (finished runs skipped,
#      unfinished ones resumed); tf-kd trains its Tf-KD_reg variant (no teacher needed)
#   2  eval each finished run on the test split -> $RUNS/results/<backbone>__<method>_seed<S>.json
#   3  the table: method x backbone, mean ± sample std over seeds -> $RUNS/results/table.md
#
# Re-running is safe: finished runs are skipped, unfinished ones resumed.
set -euo pipefail

DATASET=${DATASET:-fusar}
CONFIG=${CONFIG:-}
DATA_ROOT=${DATA_ROOT:-data/sar}
FUSAR_RAW=${FUSAR_RAW:-}
OPENSARSHIP_RAW=${OPENSARSHIP_RAW:-}
RUNS=${RUNS:-}
METHODS=${METHODS:-"drrnet ce cs-kd ps-kd tf-kd byot dlb zipf-ls"}
BACKBONES=${BACKBONES:-"resnet18 resnet50 vgg16 densenet121 mobilenet_v2"}
SEEDS=${SEEDS:-"0 1 2"}
SHOTS=${SHOTS:-0}
LABEL_NOISE=${LABEL_NOISE:-0}
SIZE=${SIZE:-128}
STOP_STAGE=${STOP_STAGE:-3}
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"  # options, run_stage, log, die, skd_train, to_file, results_table

[[ $DATASET == fusar || $DATASET == opensarship ]] || die "--dataset must be fusar or opensarship"
CONFIG=${CONFIG:-recipes/sar/$DATASET.yaml}
suffix=""
[[ $SHOTS != 0 ]] && suffix+="_k$SHOTS"
[[ $LABEL_NOISE != 0 ]] && suffix+="_n$LABEL_NOISE"
DATA=$DATA_ROOT/$DATASET$suffix
RUNS=${RUNS:-runs/sar_$DATASET$suffix}
RESULTS=$RUNS/results

if run_stage 0; then
  flags=(--data-root "$DATA_ROOT" --shots "$SHOTS" --label-noise "$LABEL_NOISE" --size "$SIZE")
  [[ -n $FUSAR_RAW ]] && flags+=(--fusar-raw "$FUSAR_RAW")
  [[ -n $OPENSARSHIP_RAW ]] && flags+=(--opensarship-raw "$OPENSARSHIP_RAW")
  [[ $OVERWRITE == 1 ]] && flags+=(--overwrite)
  SKD=$SKD bash "$ROOT/data_scripts/sar.sh" "${flags[@]}"
fi

if run_stage 1; then
  [[ -f $DATA/prep.json ]] || die "no prepared dataset in $DATA (stage 0 with --${DATASET}-raw)"
  for seed in $SEEDS; do for bb in $BACKBONES; do for m in $METHODS; do
    skd_train sar "$RUNS/$bb/${m}_seed$seed" "$DATA" "$seed" --method "$m" --backbone "$bb"
  done; done; done
fi

if run_stage 2; then
  mkdir -p "$RESULTS"
  for bb in $BACKBONES; do
    for rd in "$RUNS/$bb"/*_seed*; do
      [[ -f $rd/train_summary.json ]] || { log "$rd: not finished, skipped"; continue; }
      to_file "$RESULTS/${bb}__$(basename "$rd").json" "$SKD" sar eval --run-dir "$rd" --device "$DEVICE" --json
    done
  done
fi

if run_stage 3; then
  [[ -d $RESULTS ]] || die "no results in $RESULTS (stage 2 first)"
  results_table "$RESULTS" --glob '*__*_seed*.json' --by-key method,backbone --columns backbone --digits 1 \
    --metric top-1=accuracy:100 \
    --caption "top-1 (%) on the test split, mean ± sample std over seeds (n per cell = number of finished seeds)" \
    | tee "$RESULTS/table.md"
fi
