#!/usr/bin/env bash
# Download LibriSpeech from OpenSLR (SLR12), extract it and prepare it for `skd asr-ctc`.
#
# Usage:
#   data_scripts/librispeech.sh [--data-root DIR] [--out DIR] [--splits "S1 S2 ..."]
#                               [--tokenizer char|bpe|unigram] [--vocab-size N]
#                               [--base-url URL] [--no-download] [--verify] [--overwrite]
#   Every flag has an environment-variable twin (same name, upper case, dashes -> underscores:
#   DATA_ROOT, OUT, SPLITS, TOKENIZER, VOCAB_SIZE, BASE_URL, NO_DOWNLOAD=1, VERIFY=1,
#   OVERWRITE=1, SKD); a flag wins over the variable.
#
# Examples:
#   data_scripts/librispeech.sh                                     # train-clean-100 + dev/test clean + other
#   DATA_ROOT=/data/ls OUT=/data/ls/prepared data_scripts/librispeech.sh
#   data_scripts/librispeech.sh --splits "train-clean-100 train-clean-360 dev-clean test-clean"
#   data_scripts/librispeech.sh --splits train-clean-100            # dev = 5 % held out of train, no test
#   data_scripts/librispeech.sh --splits test-other --out data/ls_test_other   # evaluation only
#
# Steps (each one is skipped when its output already exists, so re-running is cheap):
#   1. download  $BASE_URL/<split>.tar.gz -> $DATA_ROOT/archives/<split>.tar.gz
#                (to <split>.tar.gz.part first, renamed when complete; resumable with wget/curl)
#   2. verify    the archive exists and is non-empty (--verify: also `gzip -t`, slow for 6 GB)
#   3. extract   into $DATA_ROOT -> $DATA_ROOT/LibriSpeech/<split>/ (marker: archives/<split>.extracted;
#                once extracted, steps 1-3 are skipped and the archive may be deleted)
#   4. prep      `skd asr-ctc prep --source librispeech --raw RAW --out $OUT --tokenizer ...`
#                skipped if $OUT/prep.json exists, unless --overwrite.
#
# How prep reads the sets (skdcli/asr_ctc/data.py, _librispeech_sets and set_role), which decides
# RAW below:
#   - Each immediate subdirectory of RAW whose name starts with train / dev / test
#     (case-insensitive) is one NAMED set with that role: dev-clean and dev-other stay two sets,
#     and `skd asr-ctc eval --split all` reports WER per set (training merges the train sets;
#     checkpoint selection uses all dev sets together). Other subdirectories are ignored.
#   - If RAW has no such subdirectory but holds a LibriSpeech/ directory, prep looks inside it.
#   - If there is still none, RAW itself is ONE set, whose role comes from its name: a lone
#     test-other is a test set (an evaluation-only dataset: `eval --data` it with a trained run),
#     a name without a role (e.g. my-corpus) is a train pool.
#   - Without a dev* set, dev is held out of train as the set dev-heldout: 5 % of the utterances,
#     picked by a seeded hash of the utterance id (speakers overlap with train). Without a test*
#     set, `skd asr-ctc eval` falls back to the dev sets.
# Passing $DATA_ROOT/LibriSpeech directly would read every set ever extracted there (e.g. a
# later train-clean-360 into training), so with more than one split this script links exactly $SPLITS into
# $DATA_ROOT/splits/<name>-<hash>/ and passes that directory as RAW. With a single split it
# passes $DATA_ROOT/LibriSpeech/<split> itself.
#
# Archive sizes (approximate): train-clean-100 6.3 GB, each dev/test set ~0.3-0.35 GB. Licence:
# CC BY 4.0 (Panayotov et al., ICASSP 2015); see data_scripts/README.md. Not run in CI.
set -euo pipefail

DATA_ROOT=${DATA_ROOT:-data/librispeech_raw}
OUT=${OUT:-data/librispeech}
SPLITS=${SPLITS:-"train-clean-100 dev-clean dev-other test-clean test-other"}
TOKENIZER=${TOKENIZER:-char}
VOCAB_SIZE=${VOCAB_SIZE:-256}       # sentencepiece only (--tokenizer bpe|unigram)
BASE_URL=${BASE_URL:-https://www.openslr.org/resources/12}
NO_DOWNLOAD=${NO_DOWNLOAD:-0}
VERIFY=${VERIFY:-0}
OVERWRITE=${OVERWRITE:-0}
SKD=${SKD:-skd}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "librispeech.sh: error: $*" >&2; exit 1; }
log() { echo "librispeech.sh: $*" >&2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --data-root)   DATA_ROOT=$2; shift 2 ;;
    --out)         OUT=$2; shift 2 ;;
    --splits)      SPLITS=$2; shift 2 ;;
    --tokenizer)   TOKENIZER=$2; shift 2 ;;
    --vocab-size)  VOCAB_SIZE=$2; shift 2 ;;
    --base-url)    BASE_URL=$2; shift 2 ;;
    --no-download) NO_DOWNLOAD=1; shift ;;
    --verify)      VERIFY=1; shift ;;
    --overwrite)   OVERWRITE=1; shift ;;
    -h|--help)     usage; exit 0 ;;
    *)             die "unknown argument '$1' (see --help)" ;;
  esac
done

KNOWN="dev-clean dev-other test-clean test-other train-clean-100 train-clean-360 train-other-500"
read -r -a split_list <<< "$SPLITS"
[[ ${#split_list[@]} -gt 0 ]] || die "no splits given"
for split in "${split_list[@]}"; do
  [[ " $KNOWN " == *" $split "* ]] || die "unknown split '$split' (one of: $KNOWN)"
done

archives=$DATA_ROOT/archives
mkdir -p "$archives"

download() {  # url dest
  local url=$1 dest=$2
  if command -v wget > /dev/null; then
    wget --continue --tries=3 --progress=dot:giga -O "$dest.part" "$url"
  elif command -v curl > /dev/null; then
    curl --fail --location --retry 3 --continue-at - --output "$dest.part" "$url"
  else
    die "neither wget nor curl is installed"
  fi
  mv "$dest.part" "$dest"
}

for split in "${split_list[@]}"; do
  archive=$archives/$split.tar.gz
  if [[ -f $archives/$split.extracted && -d $DATA_ROOT/LibriSpeech/$split ]]; then
    log "$split: already extracted ($DATA_ROOT/LibriSpeech/$split); the archive may be deleted"
    continue
  fi
  # 1. download (skipped if the archive is already there)
  if [[ -s $archive ]]; then
    log "$split: archive present, not downloading ($archive)"
  elif [[ $NO_DOWNLOAD == 1 ]]; then
    die "$archive is missing and --no-download was given"
  else
    log "$split: downloading $BASE_URL/$split.tar.gz"
    download "$BASE_URL/$split.tar.gz" "$archive"
  fi
  # 2. verify, 3. extract
  [[ -s $archive ]] || die "$split: archive missing or empty: $archive"
  if [[ $VERIFY == 1 ]]; then
    log "$split: checking gzip integrity"
    gzip -t "$archive" || die "$split: corrupt archive $archive (delete it and re-run)"
  fi
  log "$split: extracting into $DATA_ROOT"
  tar -xzf "$archive" -C "$DATA_ROOT"
  [[ -d $DATA_ROOT/LibriSpeech/$split ]] \
    || die "$split: $archive did not contain LibriSpeech/$split/"
  touch "$archives/$split.extracted"
done

# 4. prep: choose RAW (see the mapping rules at the top)
if [[ ${#split_list[@]} -eq 1 ]]; then
  raw=$DATA_ROOT/LibriSpeech/${split_list[0]}
else
  key=$(printf '%s\n' "${split_list[@]}" | sort | tr '\n' ' ')
  raw=$DATA_ROOT/splits/$(printf '%s' "$key" | md5sum | cut -c1-8)
  mkdir -p "$raw"
  for split in "${split_list[@]}"; do
    ln -sfn "$(cd "$DATA_ROOT/LibriSpeech/$split" && pwd)" "$raw/$split"
  done
  printf '%s\n' "$key" > "$raw/SPLITS.txt"
  if ! printf '%s\n' "${split_list[@]}" | grep -q '^train'; then
    log "note: no train-* split in '$SPLITS': the prepared dataset is for evaluation only"
  fi
fi

if [[ -f $OUT/prep.json && $OVERWRITE != 1 ]]; then
  log "prepared dataset already present, not re-running prep: $OUT (--overwrite to redo)"
  exit 0
fi
prep_args=(asr-ctc prep --source librispeech --raw "$raw" --out "$OUT" --tokenizer "$TOKENIZER")
[[ $TOKENIZER == char ]] || prep_args+=(--vocab-size "$VOCAB_SIZE")
[[ $OVERWRITE == 1 ]] && prep_args+=(--overwrite)
log "$SKD ${prep_args[*]}"
$SKD "${prep_args[@]}"
