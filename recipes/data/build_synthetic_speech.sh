#!/usr/bin/env bash
# Optional: synthetic English speech for volume (never for quality claims) with espeak-ng (+ mbrola).
#
# Usage:   recipes/data/build_synthetic_speech.sh OUT_DIR [N_SENTENCES] [SEED]   (defaults: 400, 0)
# Output:  OUT_DIR/<voice>/<voice>_<n>.wav  (espeak-ng: 22.05 kHz, mbrola: 16 kHz; mono 16-bit WAV)
#
# Debian packages needed: espeak-ng, python3, coreutils. Optional: mbrola plus any of mbrola-us1,
# mbrola-us2, mbrola-us3, mbrola-en1 (Debian contrib/non-free: enable those areas first); each installed
# mbrola voice is used in addition to the espeak-ng voice variants. Sentences are generated from a small
# built-in vocabulary with a fixed seed, so the corpus is reproducible and free of third-party text.
set -euo pipefail

die() { echo "build_synthetic_speech: $*" >&2; exit 1; }
[[ $# -ge 1 ]] || die "usage: $0 OUT_DIR [N_SENTENCES] [SEED]"
OUT_DIR=$1
N=${2:-400}
SEED=${3:-0}
command -v espeak-ng >/dev/null 2>&1 || die "espeak-ng not found; on Debian: apt-get install espeak-ng"
command -v python3 >/dev/null 2>&1 || die "python3 not found; on Debian: apt-get install python3"
mkdir -p "$OUT_DIR"

# espeak-ng voice variants (accent + voice quality) and, when installed, mbrola voices.
VOICES=(en-us en-us+f2 en-us+m3 en-gb en-gb+f4 en-gb-scotland+m2 en-us+f5 en-029+m1)
for mb in us1 us2 us3 en1; do
    if [[ -e /usr/share/mbrola/$mb/$mb || -e /usr/share/mbrola/$mb ]] && command -v mbrola >/dev/null 2>&1; then
        VOICES+=("mb-$mb")
    fi
done

python3 - "$N" "$SEED" >"$OUT_DIR/sentences.txt" <<'PY'
import random
import sys

n, seed = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)
subj = ["the old farmer", "my sister", "a quiet engineer", "the little dog", "our neighbour", "the captain",
        "every student", "a tired traveller", "the baker", "this small company"]
verb = ["carried", "painted", "forgot", "discovered", "repaired", "counted", "described", "ordered",
        "borrowed", "measured"]
obj = ["a wooden chair", "seven bright lanterns", "the broken radio", "a letter from Paris",
       "the northern road", "twelve green apples", "an empty bottle", "the morning train",
       "a heavy suitcase", "the final report"]
tail = ["before the storm arrived", "on a cold Tuesday", "without saying a word", "near the harbour",
        "at half past nine", "while the kettle boiled", "under the bridge", "for the third time",
        "in the late afternoon", "with great care"]
for i in range(n):
    s = f"{rng.choice(subj)} {rng.choice(verb)} {rng.choice(obj)} {rng.choice(tail)}"
    end = "?" if rng.random() < 0.15 else "."
    print(s[0].upper() + s[1:] + end)
PY

i=0
while IFS= read -r line; do
    voice=${VOICES[$((i % ${#VOICES[@]}))]}
    rate=$((150 + (i * 37 % 60)))  # 150..209 words per minute
    pitch=$((35 + (i * 53 % 30)))  # espeak-ng pitch 35..64
    dir="$OUT_DIR/${voice//+/_}"
    mkdir -p "$dir"
    out="$dir/${voice//+/_}_$(printf %05d "$i").wav"
    espeak-ng -v "$voice" -s "$rate" -p "$pitch" -w "$out.part" "$line" || die "espeak-ng failed for voice $voice"
    mv -f "$out.part" "$out"
    i=$((i + 1))
done <"$OUT_DIR/sentences.txt"
echo "wrote $i files with ${#VOICES[@]} voices to $OUT_DIR (synthetic: use for volume only)"
