#!/usr/bin/env bash
# One GPU lease for the rotation-trick ablation (recipes/ablation_rotation_vs_ste_speech16k.yaml): its runs
# (VARIANTS x SEEDS, nine by default) train side by side on one GPU for BUDGET_S seconds; the last checkpoint
# step every run reached is exported (float16, no code tables) and brought back in parts of 15 MiB with the
# runs' metrics, logs and a sample of the GPU's utilisation (beyond four parts, by a second call it prints):
#   OUT=/tmp/out DATA=.gpudata/manifest.tsv BUDGET_S=420 WHEELS=.whl bash benchmarks/gpu_ablation.sh
# The script takes about 60 s more than BUDGET_S (wheels, CUDA start-up, decoding the data, last checkpoints,
# exports). Back here (the runs' folders land in runs/ablation_s16/runs, code tables are counted on the CPU):
#   cat ablation.tar.gz.part-* | tar xz -C runs/ablation_s16
#   rotcodec ablate recipes/ablation_rotation_vs_ste_speech16k.yaml --init rotcodec/pretrained/speech16k \
#       --out runs/ablation_s16 --set train.steps=STEP --set 'data.sources=[speech_manifest.tsv]' \
#       --export-seconds 300 --eval-data test_manifest.tsv --kbps 1.5 3 6 12 --max-files 17 --max-seconds 8
# where STEP is the step this script prints at the end (also in OUT's step.txt inside the archive).
# A CPU dry run: EXTRA="train.batch_size=2 train.checkpoint_every=5 train.log_every=5" BUDGET_S=30 SEEDS=0
set -u
: "${OUT:?set OUT to the folder for results}" "${DATA:?set DATA to a training manifest}"
BUDGET_S=${BUDGET_S:-420}
VARIANTS=${VARIANTS:-rotation-detached rotation-chained ste}
SEEDS=${SEEDS:-0 1 2}
RECIPE=${RECIPE:-recipes/ablation_rotation_vs_ste_speech16k.yaml}
INIT=${INIT:-rotcodec/pretrained/speech16k}
WORK=${WORK:-/tmp/ablation}
export PYTHONUNBUFFERED=1
. benchmarks/lease_env.sh  # log, and PYTHONPATH with the carried wheels
rm -rf "$WORK" && mkdir -p "$WORK/bring/logs" "$OUT"
LOGS=$WORK/bring/logs
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$LOGS/gpu.txt"
python3 -c "import torch, rotcodec; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1
# busy fraction of the GPU while the runs train, once a second
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader -l 1 > "$LOGS/gpu_util.csv" 2>/dev/null &
SMI=$!

extra=()
for kv in ${EXTRA:-}; do extra+=(--set "$kv"); done
MAXMIN=$(python3 -c "print(round($BUDGET_S / 60, 2))")
pids=()
for v in $VARIANTS; do
    for s in $SEEDS; do
        python3 -m rotcodec ablate "$RECIPE" --init "$INIT" --out "$WORK/abl" --variants "$v" --seeds "$s" \
            --train-only --quiet --set "data.sources=[$DATA]" --set train.max_minutes="$MAXMIN" \
            --set train.threads=1 --set data.num_workers=1 "${extra[@]}" > "$LOGS/train_${v}__seed$s.txt" 2>&1 &
        pids+=($!)
    done
done
log "${#pids[@]} runs train for $MAXMIN min"
( sleep $((BUDGET_S + 120)); kill "${pids[@]}" ) > /dev/null 2>&1 &
BACKSTOP=$!
for p in "${pids[@]}"; do wait "$p"; done
kill $BACKSTOP $SMI 2>/dev/null
log "runs finished"

# The step every run has a checkpoint of (the flat learning rate makes runs at one step comparable).
STEP=$(python3 - "$WORK/abl/runs" <<'EOF'
import pathlib, sys
runs = [r for r in sorted(pathlib.Path(sys.argv[1]).iterdir()) if r.is_dir()]
steps = [{int(p.name[5:]) for p in (r / "checkpoints").glob("step_*") if (p / "state.json").is_file()} for r in runs]
common = set.intersection(*steps) if steps else set()
print(max(common) if common else -1)
EOF
)
log "common step: $STEP"
echo "$STEP" > "$LOGS/step.txt"
NAME=$(printf "step_%08d" "$STEP")
for r in "$WORK"/abl/runs/*/; do
    r=${r%/}; n=$(basename "$r")
    mkdir -p "$WORK/bring/runs/$n/eval/export"
    cp "$r/config.json" "$WORK/bring/runs/$n/" 2>/dev/null
    # the curves and final loss of the report stop at the step compared
    python3 -c "import json, sys; rows = [l for l in open(sys.argv[1]) if l.strip() and json.loads(l).get('step', 0) <= $STEP]; open(sys.argv[2], 'w').writelines(rows)" \
        "$r/metrics.jsonl" "$WORK/bring/runs/$n/metrics.jsonl" 2>/dev/null
    tail -2 "$LOGS/train_$n.txt" 2>/dev/null
    if [ "$STEP" -ge 0 ]; then
        python3 -m rotcodec export "$r/checkpoints/$NAME" -o "$WORK/bring/runs/$n/eval/export/$NAME" --threads 1 \
            > /dev/null 2>> "$LOGS/export_errors.txt" &
    fi
done
wait
tar czf "$WORK/ablation.tar.gz" -C "$WORK/bring" .
# A call brings back at most 64 MiB (8 files of 16 MiB): four parts of 15 MiB now; nine runs' exports are about
# 85 MB, so the rest waits on the machine for a second call made at once (it is given back 30 s after a call).
mkdir -p "$WORK/parts"
split -b 15M "$WORK/ablation.tar.gz" "$WORK/parts/ablation.tar.gz.part-"
ls "$WORK"/parts/* | head -4 | xargs -I{} cp {} "$OUT/"
left=$(ls "$WORK"/parts/* | tail -n +5 | tr '\n' ' ')
log "brought back $(ls "$OUT" | wc -l) of $(ls "$WORK/parts" | wc -l) part(s) of $(du -h "$WORK/ablation.tar.gz" | cut -f1); STEP=$STEP"
[ -n "$left" ] && echo "bring back the rest now, in a second call: cp $left\$OUT/"
awk -F', ' '{gsub(/ %/, "", $1); s += $1; n++} END {if (n) printf "GPU busy %.0f%% on average over %d s\n", s / n, n}' \
    "$LOGS/gpu_util.csv"
