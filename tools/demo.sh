#!/usr/bin/env bash
# Command (1) of the README: install edged into .venv, fetch the demo models, start the daemon
# on its default config (state and socket under ./.edged so no root is needed), and walk
# through edgectl. The daemon keeps running afterwards; the script prints how to stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[convert]'  # convert: variants made on the device
.venv/bin/python tools/fetch_models.py --dest models

STATE=${EDGED_DEMO_DIR:-$PWD/.edged}
SOCK="$STATE/edged.sock"
mkdir -p "$STATE"
export EDGED_TARGET="unix:$SOCK"
EDGECTL=".venv/bin/edgectl"

if ! "$EDGECTL" --timeout 2 status >/dev/null 2>&1; then
  .venv/bin/edged config default > "$STATE/edged.yaml"
  nohup .venv/bin/edged --config "$STATE/edged.yaml" --state-dir "$STATE/state" \
    --socket "$SOCK" >"$STATE/edged.log" 2>&1 &
  echo $! > "$STATE/edged.pid"
  for _ in $(seq 1 100); do
    "$EDGECTL" --timeout 1 status >/dev/null 2>&1 && break
    sleep 0.2
  done
fi
echo "edged is running: socket unix:$SOCK, state $STATE/state, log $STATE/edged.log"

run() { echo; echo "\$ edgectl $*"; "$EDGECTL" "$@" || echo "(exit code $?)"; }
run status
if ! "$EDGECTL" models 2>/dev/null | grep -q '^silero-vad '; then
  run install silero-vad models/silero-vad.onnx --tier ram --task vad --quality 0.9 \
      --warmup input=1x512
  run install ppocr-det models/ppocr-det.onnx --tier swap --task ocr.detect --quality 0.8 \
      --warmup x=1x3x64x64
  run install ppocr-rec models/ppocr-rec.onnx --tier swap --task ocr.recognize --quality 0.8 \
      --warmup x=1x3x48x320
  run install ppocr-cls models/ppocr-cls.onnx --tier storage --task ocr.classify \
      --quality 0.7 --warmup x=1x3x48x192
fi
run models
run show ppocr-det
run check ppocr-rec
run check --file models/ppocr-cls.onnx
run load ppocr-det
.venv/bin/python - "$STATE" <<'PY'
import sys, numpy as np
np.save(f"{sys.argv[1]}/frame.npy", np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32))
PY
run infer ppocr-det --input "x=$STATE/frame.npy"
run select --task ocr.detect --priority speed
run status
run events
echo
echo "The daemon keeps running (pid $(cat "$STATE/edged.pid" 2>/dev/null || echo '?'))."
echo "Try: EDGED_TARGET=unix:$SOCK .venv/bin/edgectl status"
echo "Stop it: kill \$(cat $STATE/edged.pid)"
