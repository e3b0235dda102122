#!/usr/bin/env bash
# Train recipes side by side on one GPU host, then export (cpu-int8, or $PROFILE) and evaluate the best: one device call.
#
#   training/gpu/pack.sh                      # here, once: wheels + data into .gpu/train (~20 MB)
#   # device call: carry [".gpu/train"], command:
#   PYTHONUNBUFFERED=1 MINUTES=6 bash training/gpu/run.sh NAME="recipe.toml [overrides]" ...
#
# Each NAME trains `mtop-edge train --recipe ...` with a time limit of MINUTES (the Trainer then
# evaluates, saves and keeps the best checkpoint), all runs at once; then the best run by
# in-training EM is exported with $PROFILE (default export/cpu-int8.toml) (parity on 200 rows) and scored on every
# eval row by the runtime. Into $OUT (8 files at most come back): the log, runs.tar (train logs
# and summaries), the best run's export (a tar) and its checkpoint (fp16, in parts of 15 MB).
# DEVICE=cpu ROWS=... rehearses it on a CPU machine; PROFILE=export/cpu-fp32.toml exports fp32.
# KEEP=all skips the export and brings back every run's checkpoint instead (fp16 parts; mind the
# 8 files), to export elsewhere.
set -uo pipefail
OUT=${OUT:-/tmp/train-out}
MINUTES=${MINUTES:-6}
DEVICE=${DEVICE:-cuda}
PROFILE=${PROFILE:-export/cpu-int8.toml}
KEEP=${KEEP:-best}
WORK=${WORK:-/tmp/train-work}
payload=.gpu/train
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/train.log") 2>&1
step() { echo; echo "== $* ($(date +%T))"; }

step "host"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1 || echo "no nvidia-smi"
if [ -d "$payload/wheels" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$payload"/wheels/*.whl || exit 3
  export PYTHONPATH=/tmp/site:$PWD
fi
me="python3 -m mtop_edge"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)"

step "train ${#} run(s) side by side, ${MINUTES} min each at most"
names=(); pids=()  # wait on these only: a bare `wait` would also wait for the tee above
for spec in "$@"; do
  name=${spec%%=*}; args=${spec#*=}; names+=("$name")
  # shellcheck disable=SC2086
  $me train --recipe $args --data "$payload/train.jsonl" --eval-data "$payload/eval.txt" \
    --out "$WORK/$name" --name "$name" --device "$DEVICE" --max-minutes "$MINUTES" --overwrite \
    > "$WORK/$name.log" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"
for name in "${names[@]}"; do
  echo "-- $name"; tr "\r" "\n" < "$WORK/$name.log" | grep -a -E "(^training|step [0-9]+/[0-9]+ \| eval|^time limit|^done|^Error)" | sed -E "s/^.*(step [0-9]+)/\1/" | tail -20
done
# at most 8 files come back from a device call: the runs' logs and summaries travel as one tar
(cd "$WORK" && tar -cf "$OUT/runs.tar" ./*.log ./*/train_log.jsonl ./*/training_summary.json 2>/dev/null)

best=$(python3 - "$WORK" "${names[@]}" <<'PY'
import json, sys
from pathlib import Path
scores = {}
for name in sys.argv[2:]:
    path = Path(sys.argv[1]) / name / "training_summary.json"
    if path.is_file():
        scores[name] = json.loads(path.read_text())["eval"].get("exact_match", 0.0)
print(max(scores, key=scores.get) if scores else "")
PY
)
[ -n "$best" ] || { echo "no run finished"; exit 1; }
if [ "$KEEP" = best ]; then
  # one export only (three side by side did not finish in a 600 s call): the best run by in-training EM
  step "export $best ($PROFILE) and evaluate every eval row, constrained"
  limit=${ROWS:+--limit $ROWS}
  OMP_NUM_THREADS=8 $me export --model "$WORK/$best" --out "$WORK/$best-onnx" --profile "$PROFILE" \
    --model-name "$best" --threads 8 2>&1 | grep -E "^(parity|sizes|Error|pointer head)"
  OMP_NUM_THREADS=8 $me evaluate --engine onnx --model "$WORK/$best-onnx" --data "$payload/eval.txt" $limit \
    --threads 8 --json
  [ -d "$WORK/$best-onnx" ] && tar -C "$WORK" -cf "$OUT/$best-onnx.tar" "$best-onnx"
  keep=("$best")
else
  keep=()
  for name in "${names[@]}"; do [ -f "$WORK/$name/model.safetensors" ] && keep+=("$name"); done
fi

for name in "${keep[@]}"; do
  step "$name: its checkpoint as fp16, in parts"
  python3 - "$WORK/$name" <<'PY'
import sys
from pathlib import Path
from safetensors.torch import load_file, save_file
path = Path(sys.argv[1]) / "model.safetensors"
weights = load_file(str(path))
assert all(t.isfinite().all() for t in weights.values())
save_file({k: v.half().contiguous() for k, v in weights.items()}, str(path), metadata={"format": "pt"})
print("fp16 checkpoint", path.stat().st_size / 1e6, "MB")
PY
  rm -rf "$WORK/$name/checkpoints"
  tar -C "$WORK" -cf - "$name" | split -b 15m - "$OUT/$name-checkpoint.tar.part_"
done
ls -la "$OUT"
