#!/usr/bin/env bash
# Build a 16 kHz speech corpus from the Asterisk "core sounds" voice prompts shipped in Debian.
#
# Usage:   recipes/data/build_asterisk_speech.sh OUT_DIR [LANG ...]     (LANG: en es fr it ru; default en)
# Output:  OUT_DIR/<lang>/<voice>/<subfolder>/<prompt>.flac  (16 kHz mono FLAC, one speaker per language)
#          OUT_DIR/<lang>/SOURCE.txt                 (package, version and licence of what was decoded)
#
# Debian packages needed on the host: apt (apt-get download), dpkg (dpkg -x), ffmpeg (G.722 decoder),
# findutils, coreutils. Nothing is installed: the .deb files are only downloaded and unpacked into a
# temporary folder that is removed afterwards. Run `apt-get update` once beforehand.
# Licences: en/es/fr/it: CC-BY-SA-3.0, ru: CC-BY-3.0 (Digium / Allison Smith et al.); keep SOURCE.txt with
# any copy of the audio.
set -euo pipefail

die() { echo "build_asterisk_speech: $*" >&2; exit 1; }

[[ $# -ge 1 ]] || die "usage: $0 OUT_DIR [LANG ...]  (LANG in: en es fr it ru)"
OUT_DIR=$1
shift
LANGS=("$@")
[[ ${#LANGS[@]} -gt 0 ]] || LANGS=(en)

# shellcheck source=recipes/data/deb_audio.sh
source "$(dirname "${BASH_SOURCE[0]}")/deb_audio.sh"
need_tools build_asterisk_speech apt-get dpkg dpkg-deb ffmpeg find
for lang in "${LANGS[@]}"; do
    case $lang in en | es | fr | it | ru) ;; *) die "unknown language '$lang' (choose from: en es fr it ru)" ;; esac
done

mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/asterisk_sounds.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

for lang in "${LANGS[@]}"; do
    pkg="asterisk-core-sounds-${lang}-g722"
    dest="$OUT_DIR/$lang"
    echo "== $pkg -> $dest"
    fetch_deb build_asterisk_speech "$pkg" "$WORK/$lang"

    n=0
    # Prompts live under .../sounds/<voice>/...; keep <voice>/<sub-folder> (digits/, letters/, ...).
    while IFS= read -r -d '' src; do
        rel=${src#"$WORK/$lang/root/"}
        rel=${rel#*/sounds/}
        case $rel in */silence/*) continue ;; esac # pure digital silence, useless for training
        out="$dest/${rel%.g722}.flac"
        mkdir -p "$(dirname "$out")"
        # Write to a temp name first so an interrupted run never leaves a truncated file behind.
        ffmpeg -nostdin -hide_banner -loglevel error -y -f g722 -i "$src" -ar 16000 -ac 1 \
            -f flac "$out.part" || die "ffmpeg failed on $src"
        mv -f "$out.part" "$out"
        n=$((n + 1))
    done < <(find "$WORK/$lang/root" -type f -name '*.g722' -print0 | sort -z)
    [[ $n -gt 0 ]] || die "no .g722 files found inside $pkg"

    licence="CC-BY-SA-3.0"
    [[ $lang == ru ]] && licence="CC-BY-3.0"
    cat >"$dest/SOURCE.txt" <<TXT
Decoded from Debian package $pkg $DEB_VERSION (G.722 -> 16 kHz FLAC with ffmpeg).
Asterisk core sound prompts, one speaker. Licence: $licence (see /usr/share/doc/$pkg/copyright
inside the package). Attribution: Digium, Inc. / Sangoma Technologies, Asterisk core sounds.
TXT
    echo "   $n files"
done

report_hours "$OUT_DIR" "${LANGS[@]}"
