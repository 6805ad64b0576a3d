#!/usr/bin/env bash
# IWSLT14 De->En for `skd nlg-smooth`: run fairseq's examples/translation/prepare-iwslt14.sh (it
# downloads the WIT3 2014-01 de-en archive, clones mosesdecoder + subword-nmt, Moses-tokenizes,
# lowercases, cleans, holds out every 23rd training line as valid, builds the dev2010+dev2012+
# tst2010-2012 test set and applies joint BPE with 10k merges), then `skd nlg-smooth prep`.
#
# Usage: WORK=data/iwslt14_raw OUT=data/iwslt14 bash data_scripts/nlg_smooth_iwslt14.sh [--overwrite]
# Needs git, perl, python and network access. The TED data is CC BY-NC-ND 4.0: it is not stored in
# this repository. If the WIT3 URL is gone, put de-en.tgz into $WORK/fairseq/examples/translation/orig/
# yourself (the script skips the download when the archive is there).
set -euo pipefail
WORK=${WORK:-data/iwslt14_raw}
OUT=${OUT:-data/iwslt14}
VOCAB=${VOCAB:-10000}
SKD=${SKD:-skd}
FAIRSEQ_REF=${FAIRSEQ_REF:-main}

mkdir -p "$WORK"
if [[ ! -d $WORK/fairseq ]]; then
  git clone --depth 1 --branch "$FAIRSEQ_REF" https://github.com/facebookresearch/fairseq.git "$WORK/fairseq"
fi
prepared=$WORK/fairseq/examples/translation/iwslt14.tokenized.de-en
if [[ ! -f $prepared/test.en ]]; then
  (cd "$WORK/fairseq/examples/translation" && bash prepare-iwslt14.sh)
fi
"$SKD" nlg-smooth prep --source iwslt14 --raw "$prepared" --out "$OUT" --vocab-size "$VOCAB" "$@"
