#!/usr/bin/env bash
# One GPU lease, one prepared script: CUDA tests, the rotation-trick overhead vs STE, then two fine-tunes of the
# bundled speech16k side by side on the one GPU (they are launch-bound, so they share it well), each cut off by
# train.max_minutes, with their weights copied to $OUT.
#   OUT=/tmp/out DATA=path/to/manifest.tsv BUDGET_S=420 bash benchmarks/gpu_session.sh
# A: recipes/speech16k_pitch_gan.yaml (adversarial); B: recipes/speech16k_pitch.yaml at batch 32 (spectral only).
# The rates are measured first (benchmarks/train_speed.py, both at once, as the runs will share the GPU) and set
# each run's train.steps, so B's cosine decay ends near the budget instead of being cut off mid-way.
# Optional: WHEELS=folder of wheels to install into /tmp/site first (a machine without the audio packages);
# EXTRA="k=v k=v" recipe overrides for every run (a CPU dry run of this script: EXTRA="train.batch_size=2
# train.log_every=2 model.quantizer.n_q=4" SPEED_STEPS=4 BUDGET_S=20).
set -u
: "${OUT:?set OUT to the folder for results}" "${DATA:?set DATA to a training manifest}"
BUDGET_S=${BUDGET_S:-420}
INIT=${INIT:-rotcodec/pretrained/speech16k}
export PYTHONUNBUFFERED=1
T0=$(date +%s)
log() { echo "[$(($(date +%s) - T0)) s] $*"; }
mkdir -p "$OUT/logs"
if [ -n "${WHEELS:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, rotcodec; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1

log "quantizer: rotation trick vs STE (alone on the GPU)"
python3 benchmarks/quantizer.py --n-q 24 --batch 32 --frames 50 --rounds 30 2>&1 | tee "$OUT/logs/quantizer.txt"

log "training rates, both recipes at once"
SPEED_STEPS=${SPEED_STEPS:-24}
extra=()
for kv in ${EXTRA:-}; do extra+=(--set "$kv"); done
common=(--set "data.sources=[$DATA]" --set train.threads=2 "${extra[@]}")
python3 benchmarks/train_speed.py recipes/speech16k_pitch_gan.yaml --steps "$SPEED_STEPS" --set train.threads=2 \
    "${extra[@]}" > "$OUT/logs/speed_A.txt" 2>&1 &
python3 benchmarks/train_speed.py recipes/speech16k_pitch.yaml --steps "$SPEED_STEPS" --set train.batch_size=32 \
    --set train.threads=2 "${extra[@]}" > "$OUT/logs/speed_B.txt" 2>&1 &
wait
cat "$OUT/logs/speed_A.txt" "$OUT/logs/speed_B.txt"
rate() { awk -F'|' '/^\| [0-9.]+ M/ {print $3}' "$1"; }
steps_for() { python3 -c "import sys; r=float(sys.argv[1] or 1); print(max(200, int(r * $BUDGET_S * 0.9)))" "$(rate "$1")"; }
SA=$(steps_for "$OUT/logs/speed_A.txt")
SB=$(steps_for "$OUT/logs/speed_B.txt")
MAXMIN=$(python3 -c "print(round($BUDGET_S / 60, 2))")
log "A: $SA steps, B: $SB steps, max_minutes $MAXMIN each"

python3 -m rotcodec train recipes/speech16k_pitch_gan.yaml --init "$INIT" --run-dir /tmp/runs/A --quiet \
    "${common[@]}" --set train.steps="$SA" --set train.max_minutes="$MAXMIN" > "$OUT/logs/train_A.txt" 2>&1 &
PA=$!
python3 -m rotcodec train recipes/speech16k_pitch.yaml --init "$INIT" --run-dir /tmp/runs/B --quiet \
    --set train.batch_size=32 --set train.warmup_steps=200 --set train.lr=0.0002 --set data.num_workers=4 \
    --set train.valid_every=1000 --set train.checkpoint_every=500 --set train.keep_checkpoints=2 \
    "${common[@]}" --set train.steps="$SB" --set train.max_minutes="$MAXMIN" > "$OUT/logs/train_B.txt" 2>&1 &
PB=$!

log "CUDA tests while the runs train"
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -15 | tee "$OUT/logs/pytest_cuda.txt"

# The runs stop themselves at max_minutes; this is only the backstop before the lease's limit. Its output goes
# to /dev/null: a sleeper holding this script's stdout would keep a `| tee` pipeline open until the lease ends.
( sleep $((BUDGET_S + 60)); kill $PA $PB ) > /dev/null 2>&1 &
BACKSTOP=$!
wait $PA; log "A exit $?"
wait $PB; log "B exit $?"
kill $BACKSTOP 2>/dev/null
nvidia-smi --query-gpu=memory.used --format=csv,noheader

for r in A B; do
    ck=/tmp/runs/$r/checkpoints/$(cat /tmp/runs/$r/checkpoints/latest 2>/dev/null)
    if [ -f "$ck/model.safetensors" ]; then
        cp "$ck/model.safetensors" "$OUT/${r}_model.safetensors"
        cp "$ck/model.json" "$OUT/${r}_model.json"
        log "$r: brought back $ck"
    fi
    cp /tmp/runs/$r/metrics.jsonl "$OUT/logs/metrics_$r.jsonl" 2>/dev/null
    cp /tmp/runs/$r/config.json "$OUT/logs/config_$r.json" 2>/dev/null
    tail -3 "$OUT/logs/train_$r.txt"
done
tar czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -rf "$OUT/logs"
log "done"
