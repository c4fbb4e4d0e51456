#!/usr/bin/env bash
# One GPU lease, one prepared script: the CUDA tests, then two fine-tunes of the bundled speech16k side by side
# on the one GPU (they are launch-bound, so they share it well), each stopped by train.max_minutes, with their
# last checkpoints copied to $OUT; then, if time is left, the rotation trick's cost in a whole training step.
#   OUT=/tmp/out DATA=path/to/manifest.tsv BUDGET_S=390 bash benchmarks/gpu_session.sh
# A: recipes/speech16k_pitch.yaml (spectral losses) at batch 128, flat lr 2e-4: the bet that more audio per step
#    is what the CPU runs lack. B: recipes/speech16k_pitch_gan.yaml (adversarial) at batch 64.
# Both learning rates stay flat after warm-up, so a run cut by max_minutes ends where a longer one would have
# been at that step (the step rate is not known well enough beforehand to size a cosine decay).
# The tiny-recipe CUDA test runs first and stops the script if it fails: the runs would fail the same way, and an
# early stop leaves device time to fix and rerun.
# Optional: WHEELS=folder of wheels to install into /tmp/site first (a machine without the audio packages);
# INIT=weights to start from; EXTRA="k=v k=v" recipe overrides for both runs (a CPU dry run of this script:
# EXTRA="train.batch_size=2 train.log_every=2 model.quantizer.n_q=4" BUDGET_S=20 SKIP_TESTS=1).
set -u
: "${OUT:?set OUT to the folder for results}" "${DATA:?set DATA to a training manifest}"
BUDGET_S=${BUDGET_S:-390}
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

if [ -z "${SKIP_TESTS:-}" ]; then
    log "CUDA test: the tiny recipe trains with bf16 and validates"
    if ! python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py -k tiny_recipe 2>&1 | tee "$OUT/logs/pytest_tiny.txt" \
        | tail -5; then
        log "stopping: training on CUDA is broken"
    fi
    grep -q " passed" "$OUT/logs/pytest_tiny.txt" && ! grep -q " failed" "$OUT/logs/pytest_tiny.txt" || exit 1
fi

extra=()
for kv in ${EXTRA:-}; do extra+=(--set "$kv"); done
MAXMIN=$(python3 -c "print(round($BUDGET_S / 60, 2))")
common=(--set "data.sources=[$DATA]" --set train.threads=2 --set train.steps=100000 --set train.final_lr_ratio=1.0
    --set train.checkpoint_every=250 --set train.keep_checkpoints=4 --set train.valid_every=500
    --set train.max_minutes="$MAXMIN")
log "A and B train for $MAXMIN min each"
python3 -m rotcodec train recipes/speech16k_pitch.yaml --init "$INIT" --run-dir /tmp/runs/A --quiet "${common[@]}" \
    --set train.batch_size=128 --set train.lr=0.0002 --set train.warmup_steps=100 --set data.num_workers=6 \
    "${extra[@]}" > "$OUT/logs/train_A.txt" 2>&1 &
PA=$!
python3 -m rotcodec train recipes/speech16k_pitch_gan.yaml --init "$INIT" --run-dir /tmp/runs/B --quiet "${common[@]}" \
    --set train.batch_size=64 --set data.num_workers=6 "${extra[@]}" > "$OUT/logs/train_B.txt" 2>&1 &
PB=$!

if [ -z "${SKIP_TESTS:-}" ]; then
    log "the other CUDA tests, while the runs train"
    python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py -k "not tiny_recipe" 2>&1 | tail -15 \
        | tee "$OUT/logs/pytest_cuda.txt"
fi

# The runs stop themselves at max_minutes; this is only the backstop before the lease's limit. Its output goes
# to /dev/null: a sleeper holding this script's stdout would keep a `| tee` pipeline open until the lease ends.
( sleep $((BUDGET_S + 90)); kill $PA $PB ) > /dev/null 2>&1 &
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
tar czf "$OUT/logs.tar.gz" -C "$OUT" logs

# Whole-step cost of the rotation trick vs STE, alone on the GPU, if the lease has room (about 30 s each).
if [ $(($(date +%s) - T0)) -lt "${BENCH_BEFORE_S:-500}" ]; then
    for grad in rotation ste; do
        log "train_speed, speech16k_pitch batch 32, quantizer estimator: $grad"
        python3 benchmarks/train_speed.py recipes/speech16k_pitch.yaml --steps 40 --set train.batch_size=32 \
            --set model.quantizer.estimator=$grad "${extra[@]}" 2>&1 | tail -3 | tee -a "$OUT/logs/step_cost.txt"
    done
    tar czf "$OUT/logs.tar.gz" -C "$OUT" logs
fi
rm -rf "$OUT/logs"
log "done"
