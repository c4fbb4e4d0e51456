#!/usr/bin/env bash
# One GPU lease, one prepared script: the CUDA tests, then a fine-tune of the bundled speech16k with its last
# checkpoint copied to $OUT, optionally an adversarial run beside it, and the rotation trick's cost per step.
#   OUT=/tmp/out DATA=path/to/manifest.tsv BUDGET_S=480 WHEELS=.whl bash benchmarks/gpu_session.sh
# `bash benchmarks/gpu_prepare.sh [MANIFEST]` builds the carried .whl and .gpudata (then DATA=.gpudata/manifest.tsv).
# BUDGET_S is the training time; the script takes about 100 s more (wheels, the first test, decoding the data,
# the last validation), and a lease call runs 600 s at most.
# A: recipes/speech16k_phase8.yaml (the shipped model's recipe: spectral losses, the harmonic source locked to the
#    input on half the steps) at batch 128, lr 2e-4 with a cosine decay to 0.1x sized to the budget (RATE_A
#    steps/s: 6.1 alone on an H200 without the lock, docs/results/gpu_lease_h200; 4.3 each with two phase runs
#    side by side, docs/results/gpu_lease_h200_2). 2180 phase-training steps gave PESQ-WB +0.05 at 12 kbps.
#    Data: recipes/data/pack_subset.py (with --opus-kbps) into a folder .git/info/exclude ignores, carried with
#    the audio wheels the machine lacks (.whl: soundfile, soxr, librosa, auraloss, constriction and their small
#    dependencies, and nvidia-ml-py for the logged gpu_busy_frac); the working tree, wheels and data must stay
#    under 64 MiB.
# B (GAN=1): recipes/speech16k_pitch_gan.yaml at batch 64, flat lr; 925 steps made every metric worse.
#   Or (EXTRA_B="k=v ...", RECIPE_B=recipe): A's run with these overrides or this recipe, to compare two
#   settings in one lease.
# Both stop at train.max_minutes = BUDGET_S / 60 after their last validation and checkpoint.
# The tiny-recipe CUDA test runs first and stops the script if it fails: the runs would fail the same way, and an
# early stop leaves device time to fix and rerun.
# Optional: WHEELS=folder of wheels to install into /tmp/site first (a machine without the audio packages);
# INIT=weights to start from; RECIPE=run A's recipe (the music codec: RECIPE=recipes/music24k.yaml
# INIT=rotcodec/pretrained/music24k DATA=music_manifest.tsv); BENCH=1: whole-step rotation-vs-STE cost at the end (about 90 s
# per mode) at batch BENCH_BATCH (default 32), once per train.compile mode in BENCH_COMPILE (default "none"; "rotation
# model": the fused rotation trick, then encoder and decoder compiled too, whose first steps compile);
# EXTRA="k=v k=v" recipe overrides for every run (a CPU dry run of this script:
# EXTRA="train.batch_size=2 train.log_every=2 train.valid_batches=1" BUDGET_S=20 SKIP_TESTS=1 GAN=1 BENCH=1).
set -u
: "${OUT:?set OUT to the folder for results}" "${DATA:?set DATA to a training manifest}"
BUDGET_S=${BUDGET_S:-480}
GAN=${GAN:-0}
RATE_A=${RATE_A:-$([ "$GAN" = 1 ] && echo 3.3 || echo 5.5)}
INIT=${INIT:-rotcodec/pretrained/speech16k}
RECIPE=${RECIPE:-recipes/speech16k_phase8.yaml}
export PYTHONUNBUFFERED=1
. benchmarks/lease_env.sh  # log, and PYTHONPATH with the carried wheels
mkdir -p "$OUT/logs"
rm -rf /tmp/runs/A /tmp/runs/B  # a rerun on a warm machine must not bring back the last call's runs
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, rotcodec; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1

if [ -z "${SKIP_TESTS:-}" ]; then
    log "CUDA test: the tiny recipe trains with bf16 and validates"
    python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py -k tiny_recipe > "$OUT/logs/pytest_tiny.txt" 2>&1
    tail -5 "$OUT/logs/pytest_tiny.txt"
    if ! grep -q "^1 passed" "$OUT/logs/pytest_tiny.txt"; then
        log "stopping: training on CUDA is broken"
        tar czf "$OUT/logs.tar.gz" -C "$OUT" logs
        exit 1
    fi
fi

extra=()
for kv in ${EXTRA:-}; do extra+=(--set "$kv"); done
MAXMIN=$(python3 -c "print(round($BUDGET_S / 60, 2))")
STEPS_A=$(python3 -c "print(max(200, int($RATE_A * $BUDGET_S)))")
common=(--set "data.sources=[$DATA]" --set train.threads=2 --set train.checkpoint_every=250
    --set train.keep_checkpoints=4 --set train.valid_every=500 --set train.max_minutes="$MAXMIN")
log "A trains for $MAXMIN min (cosine over $STEPS_A steps)"
python3 -m rotcodec train "$RECIPE" --init "$INIT" --run-dir /tmp/runs/A --quiet "${common[@]}" \
    --set train.batch_size=128 --set train.lr=0.0002 --set train.warmup_steps=100 --set train.final_lr_ratio=0.1 \
    --set train.steps="$STEPS_A" --set data.num_workers=8 "${extra[@]}" > "$OUT/logs/train_A.txt" 2>&1 &
PA=$!
PB=
if [ -n "${EXTRA_B:-}${RECIPE_B:-}" ]; then
    # a variant of A beside it (same recipe, start, steps and schedule; RATE_A must then be the shared rate)
    extra_b=()
    for kv in ${EXTRA_B:-}; do extra_b+=(--set "$kv"); done
    log "B (A with ${RECIPE_B:-the same recipe} ${EXTRA_B:-}) trains beside it"
    python3 -m rotcodec train "${RECIPE_B:-$RECIPE}" --init "$INIT" --run-dir /tmp/runs/B --quiet "${common[@]}" \
        --set train.batch_size=128 --set train.lr=0.0002 --set train.warmup_steps=100 --set train.final_lr_ratio=0.1 \
        --set train.steps="$STEPS_A" --set data.num_workers=6 "${extra[@]}" ${extra_b[@]+"${extra_b[@]}"} > "$OUT/logs/train_B.txt" 2>&1 &
    PB=$!
elif [ "$GAN" = 1 ]; then
    log "B trains beside it"
    python3 -m rotcodec train recipes/speech16k_pitch_gan.yaml --init "$INIT" --run-dir /tmp/runs/B --quiet \
        "${common[@]}" --set train.steps=100000 --set train.batch_size=64 --set data.num_workers=6 "${extra[@]}" \
        > "$OUT/logs/train_B.txt" 2>&1 &
    PB=$!
fi

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
if [ -n "$PB" ]; then wait $PB; log "B exit $?"; fi
kill $BACKSTOP 2>/dev/null
nvidia-smi --query-gpu=memory.used --format=csv,noheader

for r in A B; do
    [ -d /tmp/runs/$r ] || continue
    ck=/tmp/runs/$r/checkpoints/$(cat /tmp/runs/$r/checkpoints/latest 2>/dev/null)
    if [ -f "$ck/model.safetensors" ]; then
        # A call brings back at most 64 MiB in 8 files of 16 MiB: each run's float32 weights without the EMA
        # sums (about 21 MB, as `rotcodec export` writes them; join here: cat A_model.safetensors.part-* >
        # A_model.safetensors), their model.json inside logs.tar.gz
        python3 -m rotcodec export "$ck" -o "/tmp/runs/${r}_model" --dtype float32 > /dev/null \
            && split -b 15M "/tmp/runs/${r}_model.safetensors" "$OUT/${r}_model.safetensors.part-" \
            && cp "/tmp/runs/${r}_model.json" "$OUT/logs/${r}_model.json" && log "$r: brought back $ck"
    fi
    cp /tmp/runs/$r/metrics.jsonl "$OUT/logs/metrics_$r.jsonl" 2>/dev/null
    cp /tmp/runs/$r/config.json "$OUT/logs/config_$r.json" 2>/dev/null
    tail -3 "$OUT/logs/train_$r.txt"
done
tar czf "$OUT/logs.tar.gz" -C "$OUT" logs  # again below: a lease cut short still brings these back

# Whole-step cost of the rotation trick vs STE, alone on the GPU, interleaved (about 90 s).
if [ -n "${BENCH:-}" ]; then
    for mode in ${BENCH_COMPILE:-none}; do
        log "step_profile, speech16k_refine batch ${BENCH_BATCH:-32}, train.compile=$mode: rotation vs ste"
        python3 benchmarks/step_profile.py recipes/speech16k_refine.yaml --steps 20 --warmup 5 --rows 12 \
            --estimators rotation ste --set train.batch_size=${BENCH_BATCH:-32} --set train.compile="$mode" \
            "${extra[@]}" > "$OUT/logs/step_profile_$mode.txt" 2>&1
        grep "^## estimator" "$OUT/logs/step_profile_$mode.txt"
    done
    tar czf "$OUT/logs.tar.gz" -C "$OUT" logs
fi
rm -rf "$OUT/logs"
log "done"
