#!/usr/bin/env bash
# Optional: render the music21 corpus (Bach chorales etc.) to audio with fluidsynth and GM soundfonts.
#
# Usage:   recipes/data/build_midi_music.sh OUT_DIR [MAX_PIECES] [RATE]   (defaults: 100, 24000 Hz)
# Output:  OUT_DIR/<soundfont>/<piece>.wav  (mono-summed by the training loader; fluidsynth writes stereo)
#
# Debian packages needed: fluidsynth, fluid-soundfont-gm, coreutils (timeout), python3. Optional:
# musescore-general-soundfont (a second timbre set). Python packages needed: music21, mido
# (pip install music21 mido). Each render runs under `timeout` because some music21 MIDI exports leave
# notes hanging and fluidsynth would otherwise render for hours; an all-notes-off event is also appended
# to every track for the same reason.
set -euo pipefail

die() { echo "build_midi_music: $*" >&2; exit 1; }
[[ $# -ge 1 ]] || die "usage: $0 OUT_DIR [MAX_PIECES] [RATE]"
OUT_DIR=$1
MAX=${2:-100}
RATE=${3:-24000}
command -v fluidsynth >/dev/null 2>&1 || die "fluidsynth not found; on Debian: apt-get install fluidsynth"
command -v timeout >/dev/null 2>&1 || die "timeout not found; on Debian: apt-get install coreutils"
python3 -c "import music21, mido" 2>/dev/null || die "python packages music21 and mido needed: pip install music21 mido"

FONTS=()
for sf2 in /usr/share/sounds/sf2/FluidR3_GM.sf2 /usr/share/sounds/sf2/MuseScore_General.sf2 \
    /usr/share/sounds/sf3/MuseScore_General.sf3; do
    [[ -f $sf2 ]] && FONTS+=("$sf2")
done
[[ ${#FONTS[@]} -gt 0 ]] || die "no General MIDI soundfont found; on Debian: apt-get install fluid-soundfont-gm"

mkdir -p "$OUT_DIR/midi"
python3 - "$OUT_DIR/midi" "$MAX" <<'PY'
import sys
from pathlib import Path

import mido
from music21 import corpus

out, limit = Path(sys.argv[1]), int(sys.argv[2])
done = 0
for path in corpus.getComposer("bach") + corpus.getComposer("beethoven") + corpus.getComposer("mozart"):
    if done >= limit:
        break
    dest = out / f"{Path(path).parent.name}_{Path(path).stem}.mid"
    if dest.exists():
        done += 1
        continue
    try:
        score = corpus.parse(path)
        tmp = score.write("midi", fp=str(dest) + ".tmp")
        mid = mido.MidiFile(tmp)
        for track in mid.tracks:  # silence every channel at the end of each track
            end = track.pop() if track and track[-1].type == "end_of_track" else None
            for ch in range(16):
                track.append(mido.Message("control_change", channel=ch, control=123, value=0, time=0))
            if end is not None:
                track.append(end)
        mid.save(str(dest))
        Path(tmp).unlink()
        done += 1
    except Exception as exc:  # a few corpus files do not convert; skip them
        print(f"skip {path}: {exc}", file=sys.stderr)
print(f"{done} MIDI files", file=sys.stderr)
PY

n=0
for mid in "$OUT_DIR"/midi/*.mid; do
    for sf2 in "${FONTS[@]}"; do
        name=$(basename "${sf2%.*}")
        mkdir -p "$OUT_DIR/$name"
        out="$OUT_DIR/$name/$(basename "${mid%.mid}").wav"
        [[ -f $out ]] && continue
        if timeout 300 fluidsynth -ni -q -F "$out.part" -r "$RATE" "$sf2" "$mid" >/dev/null 2>&1; then
            mv -f "$out.part" "$out"
            n=$((n + 1))
        else
            rm -f "$out.part"
            echo "build_midi_music: render failed or timed out: $mid ($name)" >&2
        fi
    done
done
echo "rendered $n files into $OUT_DIR"
