#!/usr/bin/env bash
# Before a GPU lease, on this machine (it costs no device time): everything `gpu_session.sh` needs carried.
#   bash benchmarks/gpu_prepare.sh [MANIFEST]
# - .whl/: the audio packages the GPU image lacks (/work/.library/device/KINDS.md lists what it has), as
#   CPython 3.12 manylinux wheels, at the versions installed here;
# - .gpudata/: a training subset packed as Ogg Opus (recipes/data/pack_subset.py) from MANIFEST, by default the
#   development speech of ../shared/data (built with recipes/data/build_shared_speech.py when missing);
# - both in .git/info/exclude, so they travel only where a call names them in `carry`;
# - a check that the working tree, wheels and data fit the lease's 64 MiB; both folders are replaced only
#   when everything was built and fits, so a failed run keeps the last good ones.
# Then one call: OUT=$OUT DATA=.gpudata/manifest.tsv BUDGET_S=440 WHEELS=.whl bash benchmarks/gpu_session.sh,
# with carry [".gpudata", ".whl"]. Environment: MAX_MB (data budget, default 22), OPUS_KBPS (default 24),
# VALID_FILES (default 6), the values of the last lease that trained the speech model (docs/LINEAGE.md).
set -eu
cd "$(git rev-parse --show-toplevel)"
MANIFEST=${1:-}
MAX_MB=${MAX_MB:-22}
OPUS_KBPS=${OPUS_KBPS:-24}
VALID_FILES=${VALID_FILES:-6}
# librosa's and soundfile's needs that the image lacks too; everything else it imports is there.
PACKAGES="soundfile soxr librosa auraloss constriction audioread decorator pooch platformdirs cffi pycparser"

if [ -z "$MANIFEST" ]; then
    MANIFEST=/tmp/shared_speech_manifest.tsv
    [ -s "$MANIFEST" ] || python3 recipes/data/build_shared_speech.py "$MANIFEST"
elif [ ! -s "$MANIFEST" ]; then
    echo "gpu_prepare: no manifest at $MANIFEST" >&2
    exit 1
fi

for path in /.whl/ /.gpudata/ /.whl.part/ /.gpudata.part/; do
    grep -qxF "$path" .git/info/exclude 2>/dev/null || echo "$path" >> .git/info/exclude
done

# Built beside the old ones and swapped in at the end: a failed run leaves the last good .whl and .gpudata.
rm -rf .whl.part .gpudata.part && mkdir .whl.part
for name in $PACKAGES; do
    version=$(python3 -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
    [ -n "$version" ] || { echo "gpu_prepare: $name is not installed here; install the project first" >&2; exit 1; }
    python3 -m pip --isolated download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        --platform any -d .whl.part "$name==$version"
done
python3 recipes/data/pack_subset.py "$MANIFEST" .gpudata.part --max-mb "$MAX_MB" --opus-kbps "$OPUS_KBPS" \
    --valid-files "$VALID_FILES"

tree_bytes=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1)
carried_bytes=$(du -cb .whl.part .gpudata.part | tail -1 | cut -f1)
total_mib=$(( (tree_bytes + carried_bytes) / 1048576 ))
echo "gpu_prepare: working tree $((tree_bytes / 1048576)) MiB + wheels and data $((carried_bytes / 1048576)) MiB" \
    "= $total_mib MiB (limit 64)"
if [ "$total_mib" -ge 64 ]; then
    rm -rf .whl.part .gpudata.part
    echo "gpu_prepare: over the lease's 64 MiB; lower MAX_MB" >&2
    exit 1
fi
rm -rf .whl .gpudata && mv .whl.part .whl && mv .gpudata.part .gpudata
