#!/usr/bin/env bash
# Gather what training/gpu/run.sh needs on the GPU host into .gpu/train (ignored by git): the pinned
# pure-Python wheels (the host has torch but not these versions) and the MTOP English rows.
#
#   training/gpu/pack.sh [DATA_DIR]        (default ../shared/data/mtop/en)
set -euo pipefail
data=${1:-../shared/data/mtop/en}
root=$(git rev-parse --show-toplevel)
cd "$root"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
mkdir -p .gpu/train/wheels
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu/train/wheels transformers==4.57.6 tokenizers==0.22.2 huggingface_hub==0.36.2 \
  optimum==2.1.0 optimum-onnx==0.1.0 2>&1 | grep -v '^WARNING: Location' || true
cp "$data/train.jsonl" "$data/eval.txt" .gpu/train/
du -sh .gpu/train
