#!/usr/bin/env bash
# Build a music corpus from the produced soundtracks that Debian ships with free games.
#
# Usage:   recipes/data/build_game_music.sh OUT_DIR [RATE] [PACKAGE ...]
#          RATE: output sample rate in Hz (default 24000); PACKAGE: default wesnoth-1.16-music
#          (~128 min, orchestral); also tested: warzone2100-music (~243 min, electronic/orchestral),
#          widelands-data, hedgewars-data, supertuxkart-data, freedroidrpg-data, flare-game, megaglest-data
#          (their music folders only).
# Output:  OUT_DIR/<package>/<track>.flac (mono FLAC at RATE, stereo mixed down) and
#          OUT_DIR/<package>/SOURCE.txt (package, version, licence).
#
# Debian packages needed on the host: apt (apt-get download), dpkg (dpkg -x), ffmpeg (Vorbis/Opus/MP3
# decoders and the resampler), findutils, coreutils. Nothing is installed: the .deb files are downloaded
# and unpacked into a temporary folder that is removed afterwards. Run `apt-get update` once beforehand.
# These soundtracks were themselves lossy-coded (mostly Ogg Vorbis): fine for training, but evaluate on
# lossless clips. Licence: per package (wesnoth, warzone2100: GPL-2+); see /usr/share/doc/PKG/copyright.
set -euo pipefail

die() { echo "build_game_music: $*" >&2; exit 1; }

[[ $# -ge 1 ]] || die "usage: $0 OUT_DIR [RATE] [PACKAGE ...]"
OUT_DIR=$1
RATE=${2:-24000}
shift $(($# >= 2 ? 2 : 1))
PACKAGES=("$@")
[[ ${#PACKAGES[@]} -gt 0 ]] || PACKAGES=(wesnoth-1.16-music)

# shellcheck source=recipes/data/deb_audio.sh
source "$(dirname "${BASH_SOURCE[0]}")/deb_audio.sh"
check_rate build_game_music "$RATE"
need_tools build_game_music apt-get dpkg dpkg-deb ffmpeg find

# Game data packages also hold sound effects and voices: where a package has a music folder, only the
# files under it count.
audio_files() {
    local root=$1 filter=()
    local -a kinds=( \( -iname '*.ogg' -o -iname '*.opus' -o -iname '*.mp3' -o -iname '*.flac' -o -iname '*.wav' \) )
    if [[ -n $(find "$root" -type f "${kinds[@]}" -ipath '*/music/*' -print -quit) ]]; then
        filter=(-ipath '*/music/*')
    fi
    find "$root" -type f "${kinds[@]}" "${filter[@]}" -print0 | sort -z
}

mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/game_music.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

for pkg in "${PACKAGES[@]}"; do
    dest="$OUT_DIR/$pkg"
    echo "== $pkg -> $dest"
    fetch_deb build_game_music "$pkg" "$WORK/$pkg"

    n=0
    declare -A seen=()
    while IFS= read -r -d '' src; do
        name=$(basename "${src%.*}")
        out="$dest/$name.flac"
        # Packages with per-language or per-theme folders reuse file names: prefix the folder on a clash.
        if [[ -n ${seen[$name]:-} ]]; then
            name="$(basename "$(dirname "$src")")_$name"
            out="$dest/$name.flac"
        fi
        seen[$name]=1
        mkdir -p "$dest"
        # Temp name first: an interrupted run never leaves a truncated file that looks complete.
        ffmpeg -nostdin -hide_banner -loglevel error -y -i "$src" -vn -ac 1 -ar "$RATE" \
            -f flac "$out.part" || die "ffmpeg failed on $src"
        mv -f "$out.part" "$out"
        n=$((n + 1))
    done < <(audio_files "$WORK/$pkg/root")
    [[ $n -gt 0 ]] || die "no audio files found inside $pkg"

    cat >"$dest/SOURCE.txt" <<TXT
Decoded from Debian package $pkg $DEB_VERSION with ffmpeg (mixed down to mono, resampled to $RATE Hz, FLAC).
Licence: see /usr/share/doc/$pkg/copyright inside the package (GPL-2+ for wesnoth and warzone2100 music).
The originals are lossy-coded; use them for training, not for final quality claims.
TXT
    echo "   $n files"
done

report_hours "$OUT_DIR" "${PACKAGES[@]}"
