#!/usr/bin/env bash
# MNIST, Fashion-MNIST and CIFAR-10 for `skd dataset-distill`: download from the publishers, check the
# archives' MD5 sums, extract, then `skd dataset-distill prep` (our own readers, with magic-number and
# size checks) into $OUT/<name>.
#
# Usage: DATA_ROOT=data/raw OUT=data bash data_scripts/dataset_distill.sh [mnist] [fashion-mnist] [cifar10] [cifar100]
#        (default: mnist fashion-mnist cifar10). Extra options after `--` go to `prep` (e.g. -- --overwrite).
# Needs curl (or wget), md5sum, tar and network access. Nothing is downloaded when the file is there.
#   MNIST: Y. LeCun, C. Cortes, C. Burges (the IDX files, mirrored by ossci-datasets as torchvision does);
#   Fashion-MNIST: Zalando Research, MIT licence; CIFAR-10/100: A. Krizhevsky, python version.
# The files are not stored in this repository.
set -euo pipefail
DATA_ROOT=${DATA_ROOT:-data/raw}
OUT=${OUT:-data}
SKD=${SKD:-skd}
sets=()
prep_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; prep_args=("$@"); break ;;
    mnist|fashion-mnist|cifar10|cifar100) sets+=("$1"); shift ;;
    *) echo "$(basename "$0"): unknown argument '$1'" >&2; exit 1 ;;
  esac
done
[[ ${#sets[@]} -gt 0 ]] || sets=(mnist fashion-mnist cifar10)

fetch() {  # URL DEST MD5
  local url=$1 dest=$2 md5=$3
  mkdir -p "$(dirname "$dest")"
  if [[ ! -s $dest ]]; then
    echo "download $url" >&2
    if command -v curl >/dev/null; then curl -fL --retry 3 -o "$dest.part" "$url"; else wget -O "$dest.part" "$url"; fi
    mv "$dest.part" "$dest"
  fi
  echo "$md5  $dest" | md5sum -c --quiet - || { echo "MD5 mismatch: $dest (delete it and retry)" >&2; exit 1; }
}

for name in "${sets[@]}"; do
  case "$name" in
    mnist)
      base=https://ossci-datasets.s3.amazonaws.com/mnist
      fetch $base/train-images-idx3-ubyte.gz "$DATA_ROOT/mnist/train-images-idx3-ubyte.gz" f68b3c2dcbeaaa9fbdd348bbdeb94873
      fetch $base/train-labels-idx1-ubyte.gz "$DATA_ROOT/mnist/train-labels-idx1-ubyte.gz" d53e105ee54ea40749a09fcbcd1e9432
      fetch $base/t10k-images-idx3-ubyte.gz "$DATA_ROOT/mnist/t10k-images-idx3-ubyte.gz" 9fb629c4189551a2d022fa330f9573f3
      fetch $base/t10k-labels-idx1-ubyte.gz "$DATA_ROOT/mnist/t10k-labels-idx1-ubyte.gz" ec29112dd5afa0611ce80d1b7f02629c
      "$SKD" dataset-distill prep --source mnist --raw "$DATA_ROOT/mnist" --out "$OUT/dd_mnist" "${prep_args[@]}" ;;
    fashion-mnist)
      base=http://fashion-mnist.s3-website.eu-central-1.amazonaws.com
      fetch $base/train-images-idx3-ubyte.gz "$DATA_ROOT/fashion-mnist/train-images-idx3-ubyte.gz" 8d4fb7e6c68d591d4c3dfef9ec88bf0d
      fetch $base/train-labels-idx1-ubyte.gz "$DATA_ROOT/fashion-mnist/train-labels-idx1-ubyte.gz" 25c81989df183df01b3e8a0aad5dffbe
      fetch $base/t10k-images-idx3-ubyte.gz "$DATA_ROOT/fashion-mnist/t10k-images-idx3-ubyte.gz" bef4ecab320f06d8554ea6380940ec79
      fetch $base/t10k-labels-idx1-ubyte.gz "$DATA_ROOT/fashion-mnist/t10k-labels-idx1-ubyte.gz" bb300cfdad3c16e7a12a480ee83cd310
      "$SKD" dataset-distill prep --source fashion-mnist --raw "$DATA_ROOT/fashion-mnist" --out "$OUT/dd_fashion_mnist" \
        "${prep_args[@]}" ;;
    cifar10)
      fetch https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz "$DATA_ROOT/cifar-10-python.tar.gz" \
        c58f30108f718f92721af3b95e74349a
      [[ -d $DATA_ROOT/cifar10/cifar-10-batches-py ]] || { mkdir -p "$DATA_ROOT/cifar10"; tar -xzf "$DATA_ROOT/cifar-10-python.tar.gz" -C "$DATA_ROOT/cifar10"; }
      "$SKD" dataset-distill prep --source cifar10 --raw "$DATA_ROOT/cifar10" --out "$OUT/dd_cifar10" "${prep_args[@]}" ;;
    cifar100)
      fetch https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz "$DATA_ROOT/cifar-100-python.tar.gz" \
        eb9058c3a382ffc7106e4002c42a8d85
      [[ -d $DATA_ROOT/cifar100/cifar-100-python ]] || { mkdir -p "$DATA_ROOT/cifar100"; tar -xzf "$DATA_ROOT/cifar-100-python.tar.gz" -C "$DATA_ROOT/cifar100"; }
      "$SKD" dataset-distill prep --source cifar100 --raw "$DATA_ROOT/cifar100" --out "$OUT/dd_cifar100" "${prep_args[@]}" ;;
  esac
done
