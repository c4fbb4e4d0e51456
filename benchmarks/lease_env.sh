# Sourced by the GPU lease scripts (gpu_session.sh, gpu_ablation.sh), from the repository root: a timestamped
# `log`, and the Python path with the carried audio wheels (WHEELS=folder) installed into /tmp/site first,
# for a machine without the audio packages. A failed install stops the calling script.
T0=$(date +%s)
log() { echo "[$(($(date +%s) - T0)) s] $*"; }
if [ -n "${WHEELS:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
