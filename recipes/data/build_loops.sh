#!/usr/bin/env bash
# Build drum and instrument loop tracks from the loop samples Debian ships with music software: each loop
# repeated to SECONDS, so a drum track looks like one a user would bring (the content rule in
# rotcodec/inference/content.py read a lone drum loop as speech before it saw any).
#
# Usage:   recipes/data/build_loops.sh OUT_DIR [RATE] [SECONDS]
#          RATE: output sample rate in Hz (default 24000); SECONDS: length of each track (default 20).
# Output:  OUT_DIR/<package>/<loop>.flac (mono FLAC) and OUT_DIR/<package>/SOURCE.txt.
# Sources: sonic-pi-samples (files named loop_*: CC0 mostly, see its copyright file) and lmms-common
#          (folders beats/, bassloops/, latin/: GPL-2+).
#
# Debian packages needed on the host: apt, dpkg, ffmpeg, findutils. Nothing is installed.
set -euo pipefail

die() { echo "build_loops: $*" >&2; exit 1; }

[[ $# -ge 1 ]] || die "usage: $0 OUT_DIR [RATE] [SECONDS]"
OUT_DIR=$1
RATE=${2:-24000}
SECONDS_EACH=${3:-20}
[[ $SECONDS_EACH =~ ^[0-9]+$ && $SECONDS_EACH -ge 1 ]] || die "SECONDS must be a positive integer"

# shellcheck source=recipes/data/deb_audio.sh
source "$(dirname "${BASH_SOURCE[0]}")/deb_audio.sh"
check_rate build_loops "$RATE"
need_tools build_loops apt-get dpkg dpkg-deb ffmpeg find

mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/loops.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

for pkg in sonic-pi-samples lmms-common; do
    dest="$OUT_DIR/$pkg"
    echo "== $pkg -> $dest"
    fetch_deb build_loops "$pkg" "$WORK/$pkg"
    case $pkg in
        sonic-pi-samples) globs=('*/loop_*') ;;
        lmms-common) globs=('*/samples/beats/*' '*/samples/bassloops/*' '*/samples/latin/*') ;;
    esac
    patterns=()
    for glob in "${globs[@]}"; do patterns+=(-o -ipath "$glob"); done
    n=0
    mkdir -p "$dest"
    while IFS= read -r -d '' src; do
        out="$dest/$(basename "${src%.*}").flac"
        ffmpeg -nostdin -hide_banner -loglevel error -y -stream_loop -1 -i "$src" -t "$SECONDS_EACH" -vn -ac 1 \
            -ar "$RATE" -f flac "$out.part" || die "ffmpeg failed on $src"
        mv -f "$out.part" "$out"
        n=$((n + 1))
    done < <(find "$WORK/$pkg/root" -type f \( -iname '*.ogg' -o -iname '*.flac' -o -iname '*.wav' \) \
        \( -false "${patterns[@]}" \) -print0 | sort -z)
    [[ $n -gt 0 ]] || die "no loops found inside $pkg"
    cat >"$dest/SOURCE.txt" <<TXT
Loops from Debian package $pkg $DEB_VERSION, each repeated to $SECONDS_EACH s with ffmpeg (mono, $RATE Hz, FLAC).
Licence: see /usr/share/doc/$pkg/copyright inside the package.
TXT
    echo "   $n files"
done

report_hours "$OUT_DIR" sonic-pi-samples lmms-common
