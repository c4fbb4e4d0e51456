"""`StreamLayout`: which code rows one stream carries, in order. The model plans it from `--kbps` or
`--n-q` once (`CodecModel.plan`), the `.rcq` header stores it, and encode, decode and the entropy tables
all read their rows from it; nothing is guessed back from alphabet sizes.

Rows, per channel and frame: `pitch_rows` pitch symbols (models with `pitch`), then the `envelope_rows`
band gains of envelope tier `envelope` (None: no band gains), then `n_q` RVQ stages. The last stage may be
trimmed: it sends one of its first `last_codes` codes only (a smaller alphabet in the header), which lets a
stream spend a fraction of a stage's bits.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamLayout:
    """n_q: RVQ stages sent (>= 1); envelope: the envelope tier whose band gains are sent, or None;
    pitch_rows / envelope_rows: how many rows of each kind come before the stages; last_codes: the last
    stage's alphabet when it is trimmed (>= 2), None when it is whole."""

    n_q: int
    envelope: int | None = None
    pitch_rows: int = 0
    envelope_rows: int = 0
    last_codes: int | None = None

    def __post_init__(self) -> None:
        if self.n_q < 1:
            raise ValueError(f"a stream carries at least one RVQ stage, got n_q={self.n_q}")
        if (self.envelope is None) != (self.envelope_rows == 0):
            raise ValueError(f"envelope tier {self.envelope} does not match {self.envelope_rows} envelope rows")
        if self.pitch_rows < 0 or self.envelope_rows < 0 or (self.envelope is not None and self.envelope < 0):
            raise ValueError(f"negative row counts or tier in {self}")
        if self.last_codes is not None and self.last_codes < 2:
            raise ValueError(f"a trimmed stage keeps at least 2 codes, got last_codes={self.last_codes}")

    @property
    def side_rows(self) -> int:
        """Rows before the RVQ stages."""
        return self.pitch_rows + self.envelope_rows

    @property
    def rows(self) -> int:
        """All code rows per channel and frame."""
        return self.side_rows + self.n_q

    def describe(self, phase_rows: int = 0, output_phase_rows: int = 0) -> str:
        """E.g. "n_q 2 (last of 96 codes) + pitch + 48 band gains (tier 2)"; `phase_rows` and
        `output_phase_rows`: how many of the envelope rows are harmonic and output phases (the model knows, the
        header does not)."""
        trim = "" if self.last_codes is None else f" (last of {self.last_codes} codes)"
        text = f"n_q {self.n_q}{trim}" + (" + pitch" if self.pitch_rows else "")
        if self.envelope is None:
            return text
        gains = self.envelope_rows - phase_rows - output_phase_rows
        output = f" + {output_phase_rows} output phases" if output_phase_rows else ""
        phases = f" + {phase_rows} harmonic phases" if phase_rows else ""
        return text + f" + {gains} band gains{output}{phases} (tier {self.envelope})"
