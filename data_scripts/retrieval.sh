#!/usr/bin/env bash
# Fetch MSCOCO (Karpathy split) and a BLIP retrieval checkpoint, then run `skd retrieval prep`.
# Not run in CI. Needs ~20 GB (train2014 + val2014), wget/unzip, and for the checkpoint the
# `huggingface-cli` (pip install huggingface_hub). Flickr30k images need Flickr's request form:
# put them under $ROOT/flickr30k/flickr30k-images/ and dataset_flickr30k.json beside, then
#   skd retrieval prep --source karpathy --raw $ROOT/flickr30k --encoder $ROOT/blip-itm-base-flickr --out data/flickr
#
# Usage: ROOT=/data OUT=data/coco bash data_scripts/retrieval.sh [--overwrite]
set -euo pipefail
ROOT=${ROOT:-data/retrieval_raw}
OUT=${OUT:-data/coco}
SKD=${SKD:-skd}
mkdir -p "$ROOT/coco"
cd "$ROOT/coco"
[[ -f dataset_coco.json ]] || { wget -nc https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip && unzip -o caption_datasets.zip dataset_coco.json; }
for split in train2014 val2014; do
  [[ -d $split ]] || { wget -nc "http://images.cocodataset.org/zips/$split.zip" && unzip -q "$split.zip"; }
done
cd - > /dev/null
[[ -f $ROOT/blip-itm-base-coco/config.json ]] || huggingface-cli download Salesforce/blip-itm-base-coco --local-dir "$ROOT/blip-itm-base-coco"
# Karpathy's dataset_coco.json names images by filepath/filename (train2014/..., val2014/...);
# restval is folded into train (the 113,287-image convention; --restval drop to leave it out).
"$SKD" retrieval prep --source karpathy --raw "$ROOT/coco" --encoder "$ROOT/blip-itm-base-coco" --out "$OUT" "$@"
