#!/usr/bin/env bash
# Fetch XQuAD, MLQA v1, TyDiQA-GoldP v1.1 and SQuAD v1.1, then prepare them for `skd xqa`.
# Not run in CI (the tests use tests/fixtures/xqa/ and the synthetic corpus). About 120 MB.
#
# Usage: ROOT=/data/xqa OUT=data/xqa bash data_scripts/xqa.sh [--ntl N] [--seed S] [--overwrite]
#
# Downloads (skipped when the file is already there):
#   $ROOT/xquad/xquad.{ar,de,el,en,es,hi,ro,ru,th,tr,vi,zh}.json   github.com/google-deepmind/xquad (CC BY-SA 4.0)
#   $ROOT/MLQA_V1/{dev,test}/...                                    dl.fbaipublicfiles.com/MLQA/MLQA_V1.zip (CC BY-SA 3.0)
#   $ROOT/tydiqa-goldp-v1.1-{train,dev}.json                        storage.googleapis.com/tydiqa (Apache-2.0)
#   $ROOT/squad/{train,dev}-v1.1.json                               rajpurkar.github.io/SQuAD-explorer (CC BY-SA 4.0)
# Prepared datasets ($OUT/...):
#   xquad-ntl$NTL   stage-2 training set: cross-lingual sampling over en es de ar vi hi zh (+ el ro ru th tr
#                   as zero-shot test cells); the paper's best: ntl 5 (SKD), 3 (CE)
#   mlqa            MLQA dev and test grids (49 cells each): selection on dev, final numbers on test
#   tydiqa          TyDiQA-GoldP dev cells per language (the paper's zero-shot test) and train
#   squad           SQuAD v1.1 train: stage 1 ("mBERT-qa-en")
# The model: a local Hugging Face directory, e.g. `huggingface-cli download bert-base-multilingual-cased
# --local-dir $ROOT/mbert` (stage 1 from it with recipes/xqa/mbert_squad_stage1.yaml); nothing is downloaded
# by skd itself.
set -euo pipefail
ROOT=${ROOT:-data/xqa_raw}
OUT=${OUT:-data/xqa}
SKD=${SKD:-skd}
NTL=5
SEED=3
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --ntl) NTL=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --overwrite) EXTRA+=(--overwrite); shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "xqa.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

fetch() {  # url dest: download once, refuse an empty file
  local url=$1 dest=$2
  [[ -s $dest ]] && return 0
  mkdir -p "$(dirname "$dest")"
  wget -q -O "$dest.part" "$url" && mv "$dest.part" "$dest"
  [[ -s $dest ]] || { echo "xqa.sh: empty download $url" >&2; exit 1; }
}

for lang in ar de el en es hi ro ru th tr vi zh; do
  fetch "https://raw.githubusercontent.com/google-deepmind/xquad/master/xquad.$lang.json" "$ROOT/xquad/xquad.$lang.json"
done
if [[ ! -d $ROOT/MLQA_V1/test ]]; then
  fetch https://dl.fbaipublicfiles.com/MLQA/MLQA_V1.zip "$ROOT/MLQA_V1.zip"
  unzip -q -o "$ROOT/MLQA_V1.zip" -d "$ROOT"
fi
for split in train dev; do
  fetch "https://storage.googleapis.com/tydiqa/v1.1/tydiqa-goldp-v1.1-$split.json" "$ROOT/tydiqa-goldp-v1.1-$split.json"
  fetch "https://rajpurkar.github.io/SQuAD-explorer/dataset/$split-v1.1.json" "$ROOT/squad/$split-v1.1.json"
done

prep() {  # skip a prepared dataset that exists unless --overwrite
  local out=$1; shift
  if [[ -f $out/prep.json && ${#EXTRA[@]} -eq 0 ]]; then echo "xqa.sh: keeping $out" >&2; return 0; fi
  "$SKD" xqa prep "$@" --out "$out" "${EXTRA[@]}"
}
prep "$OUT/xquad-ntl$NTL" --source xquad --raw "$ROOT/xquad" --ntl "$NTL" --seed "$SEED" \
  --languages en,es,de,ar,vi,hi,zh
prep "$OUT/mlqa" --source mlqa --raw "$ROOT/MLQA_V1"
prep "$OUT/tydiqa" --source tydiqa --raw "$ROOT"
prep "$OUT/squad" --source squad --raw "$ROOT/squad/train-v1.1.json"
