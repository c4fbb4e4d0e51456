# Shared by the corpus builders that decode audio out of Debian packages (source this file, do not run it).
# Needs apt (apt-get download), dpkg (dpkg -x, dpkg-deb) and findutils; nothing is installed.

# need_tools NAME TOOL...: stop with a clear message when a command is missing.
need_tools() {
    local name=$1 tool
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || {
            echo "$name: '$tool' not found; on Debian: apt-get install ${tool/apt-get/apt}" >&2
            exit 1
        }
    done
}

# check_rate NAME RATE: stop unless RATE is a sample rate the builders write (an integer in 8000..192000 Hz).
check_rate() {
    [[ $2 =~ ^[0-9]+$ && $2 -ge 8000 && $2 -le 192000 ]] || {
        echo "$1: RATE must be an integer in 8000..192000 Hz" >&2
        exit 1
    }
}

# fetch_deb NAME PKG WORKDIR: download PKG into WORKDIR and unpack it into WORKDIR/root; sets DEB_VERSION.
fetch_deb() {
    local name=$1 pkg=$2 work=$3 deb
    mkdir -p "$work"
    (cd "$work" && apt-get download "$pkg" >/dev/null 2>&1) || {
        echo "$name: apt-get download $pkg failed (run 'apt-get update' first; is the Debian main archive configured?)" >&2
        exit 1
    }
    deb=$(find "$work" -maxdepth 1 -name '*.deb' | head -n 1)
    [[ -n $deb ]] || { echo "$name: no .deb downloaded for $pkg" >&2; exit 1; }
    dpkg -x "$deb" "$work/root"
    DEB_VERSION=$(dpkg-deb -f "$deb" Version)
}

# report_hours ROOT SUBDIR...: print the hours of FLAC audio under each ROOT/SUBDIR (skipped without soundfile).
report_hours() {
    python3 - "$@" <<'PY' || true
import sys
from pathlib import Path

try:
    import soundfile as sf
except ImportError:
    sys.exit(0)
root = Path(sys.argv[1])
for sub in sys.argv[2:]:
    secs = sum(sf.info(str(p)).duration for p in (root / sub).rglob("*.flac"))
    print(f"{sub}: {secs / 3600:.2f} h")
PY
}
