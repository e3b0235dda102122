#!/usr/bin/env bash
# On the GPU host, after stage.sh has gathered every onnxruntime-gpu part in /tmp/gpu: install it
# beside the pinned wheels, prove the CUDA provider, then parse, evaluate, check fp16 against fp32
# and benchmark. Everything it prints is also in $OUT/gpu.log; files land in $OUT.
#
#   benchmarks/gpu/run.sh            (carry .gpu/payload and .gpu/ort/SHA256SUM)
#
# DEVICE=cpu ROWS=40 rehearses every step on a machine without a GPU (with onnxruntime already
# importable); SKIP_SHAPE=1 leaves out the mT5-small-shaped model.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
DEVICE=${DEVICE:-cuda}
ROWS=${ROWS:-}
WORK=${WORK:-/tmp/gpu-work}
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/gpu.log") 2>&1
step() { echo; echo "== $* ($(date +%T))"; }
payload=.gpu/payload

step "host"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || echo "no nvidia-smi"
python3 --version

if [ -d /tmp/gpu ] && ls /tmp/gpu/part_* >/dev/null 2>&1; then
  step "onnxruntime-gpu: reassemble, check, unpack"
  cat /tmp/gpu/part_* > /tmp/gpu/ort.tar.xz
  (cd /tmp/gpu && sha256sum -c "$OLDPWD/.gpu/ort/SHA256SUM") || { echo "parts incomplete or corrupt"; exit 3; }
  mkdir -p /tmp/ortsite && tar -C /tmp/ortsite -xJf /tmp/gpu/ort.tar.xz && rm /tmp/gpu/ort.tar.xz
fi
step "pinned wheels"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  "$payload"/wheels/*.whl || exit 3
export PYTHONPATH=/tmp/ortsite:/tmp/site:$PWD
# the host's CUDA and cuDNN come as nvidia-* Python packages (PyTorch's); onnxruntime also preloads them
nvidia_libs=$(python3 - <<'PY'
import glob, os, site
dirs = {os.path.dirname(p) for d in site.getsitepackages() for p in glob.glob(d + "/nvidia/**/lib*.so*", recursive=True)}
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH=${nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
python3 - <<'PY' || exit 3
import onnxruntime as ort, torch, transformers
print("onnxruntime", ort.__version__, ort.__file__)
print("providers", ort.get_available_providers())
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
print("transformers", transformers.__version__)
PY
me="python3 -m mtop_edge"
ckpt=$payload/checkpoint
data=$payload/eval.txt
limit=${ROWS:+--limit $ROWS}

step "the shipped default model on $DEVICE"
$me parse --device "$DEVICE" "set an alarm"
$me parse --device "$DEVICE" --json "wake me up at 7 tomorrow"
$me evaluate --engine onnx --device "$DEVICE" --model mtop_edge/models/default --data "$data" $limit --json

step "export the checkpoint: fp32 and fp16 (the cuda-fp16 profile)"
$me export --model "$ckpt" --out "$WORK/fp32" --profile export/cpu-fp32.toml --data "$data" --overwrite || exit 4
$me export --model "$ckpt" --out "$WORK/fp16" --profile export/cuda-fp16.toml --data "$data" --overwrite || exit 4

step "fp16 against fp32 on $DEVICE: finite outputs, token agreement, exact match (constrained and not)"
python3 benchmarks/gpu/fp16_check.py --fp32 "$WORK/fp32" --fp16 "$WORK/fp16" --data "$data" --device "$DEVICE" \
  ${ROWS:+--limit $ROWS} --out "$OUT/fp16-check.json"

step "benchmark on $DEVICE: the trained model"
bench() {
  $me bench --device "$DEVICE" --profile export/cuda-fp16.toml --data "$data" --threads 1 \
    --batch-sizes 1,32,256 --rows "${BENCH_ROWS:-100}" --throughput-rows 256 --warmup 5 --work "$WORK/bench" "$@"
}
bench --model "$ckpt" --no-reference-shape --out "$OUT/bench-trained"

step "CUDA tests (they skip where CUDA is absent)"
python3 -m pytest -q -m cuda tests -p no:cacheprovider 2>&1 | tail -15

if [ -z "${SKIP_SHAPE:-}" ]; then
  step "benchmark on $DEVICE: the mT5-small shape (random weights, forced steps)"
  bench --reference-shape --out "$OUT/bench-shape"
  step "the mT5-small-shaped export through parse and evaluate on $DEVICE"
  shape_dir=$(ls -d "$WORK"/bench/mt5-small-shape-*/mtop-edge-fp32 | head -1)
  $me parse --device "$DEVICE" --model "$shape_dir" --no-constrain "set an alarm" || true
  $me evaluate --engine onnx --device "$DEVICE" --model "$shape_dir" --data "$data" --limit 256 --no-constrain --json
fi
rm -f "$OUT"/*/*.png  # at most 8 files come back: keep the JSON and Markdown
step "done"
ls -laR "$OUT"
