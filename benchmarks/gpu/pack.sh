#!/usr/bin/env bash
# Prepare everything a GPU run needs under .gpu/ (ignored by git): run here, from the repo root.
#
#   benchmarks/gpu/pack.sh CHECKPOINT EVAL_DATA
#
# The GPU host's Python has only the CPU build of onnxruntime and no network. One device call
# carries at most 64 MiB with the checkout, so:
#   .gpu/ort/part_*   onnxruntime-gpu 1.31.1 (its wheel's files as one .tar.xz: ~25% smaller than
#                     the 256 MB wheel), split into parts of PART_MB MiB (50: a part and the ~13 MB checkout stay
#                     under 64 MiB); SHA256SUM checks the whole
#   .gpu/payload/     the pinned pure-Python wheels (../shared/tools/gpu-wheels.sh), the checkpoint
#                     to measure and the eval rows
# Each part travels in its own call (carry: [".gpu/ort/part_aa"], ...) running benchmarks/gpu/stage.sh;
# the last call carries .gpu/payload and runs benchmarks/gpu/run.sh. The host keeps /tmp only while
# it stays warm (30 s idle): make the calls back to back.
set -euo pipefail
checkpoint=${1:?usage: pack.sh CHECKPOINT EVAL_DATA}
data=${2:?usage: pack.sh CHECKPOINT EVAL_DATA}
root=$(git rev-parse --show-toplevel)
cd "$root"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
mkdir -p .gpu/wheel .gpu/ort .gpu/payload/wheels .gpu/payload/checkpoint
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
download() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$1" "${@:2}" 2>&1 | grep -v '^WARNING: Location' || true
}
if [ ! -f .gpu/ort/SHA256SUM ]; then
  ls .gpu/wheel/onnxruntime_gpu-1.31.1-*.whl >/dev/null 2>&1 || download .gpu/wheel onnxruntime-gpu==1.31.1
  unpacked=$(mktemp -d)
  python3 -m zipfile -e .gpu/wheel/onnxruntime_gpu-1.31.1-*.whl "$unpacked"
  tar -C "$unpacked" -cf - . | xz -9 -T2 > .gpu/ort.tar.xz
  rm -rf "$unpacked" .gpu/ort/part_*
  split -b "${PART_MB:-50}m" .gpu/ort.tar.xz .gpu/ort/part_
  (cd .gpu && sha256sum ort.tar.xz > ort/SHA256SUM && rm ort.tar.xz)
fi
download .gpu/payload/wheels transformers==4.57.6 tokenizers==0.22.2 huggingface_hub==0.36.2 \
  optimum==2.1.0 optimum-onnx==0.1.0
cp "$checkpoint"/*.json "$checkpoint"/*.safetensors "$checkpoint"/spiece.model .gpu/payload/checkpoint/
cp "$data" .gpu/payload/eval.txt
ls -la .gpu/ort
du -sh .gpu/ort/part_* .gpu/payload
