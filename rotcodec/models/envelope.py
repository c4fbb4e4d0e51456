"""Band-energy correction: the encoder sends, per frame and band, how far the decoder's output is from the input
in level (analysis by synthesis), and the decoder applies that gain in a short-time Fourier domain.

Why: the neural decoder's spectral envelope is off by several dB per band and 20 ms frame, and PESQ-WB and
STOI punish that far more than mel distance does. With 24 bands in 8 dB steps (about 2 kbps entropy-coded),
the bundled model went from PESQ-WB 1.38 to 2.04 and STOI 0.83 to 0.91 at 6 kbps, same weights
(`docs/results/band_envelope/`). CELT (Opus) sends its band energies explicitly for the same reason.

Frames: window j is a square-root Hann window of 2 x hop samples centred on frame j's first sample (it spans
frames j-1 and j); 50% overlap, so analysis and synthesis windows together sum to one (weighted overlap-add).
Band energies are measured through a Hann window of the same span.
Frame j's symbols hold the gains of window j in `levels` steps of `step_db` dB, `levels // 2` meaning 0 dB,
then, for tiers with `output_phase_edges_hz`, the phase by which window j's decode lags the input in each of
those bands (measured through the Hann window, applied as a rotation of the band's bins). Why: the decoder's
phase below about 1 kHz runs free of the input's, and PESQ-WB punishes that more than any level error; on
the test speakers, one 8-step phase per 25 Hz bin from 100 to 525 Hz lifted 12 kbps decodes by about 0.28
PESQ-WB for about 1.8 kbps (`docs/results/output_phase/`).
The encoder needs only the decode of frames up to j for them: no more encoder latency. The decoder's output
for frame j needs window j + 1, so a streamed decode runs one frame (20 ms at 50 Hz) behind and ends with
`flush`; the whole-file pass gives the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .streaming import StreamingModule

# 24 bands, log-spaced from 100 Hz to 6 kHz: narrow enough below 500 Hz to reach single harmonics
# fmt: off
SPEECH_BAND_EDGES_HZ = [
    0, 100, 120, 150, 170, 210, 250, 310, 370, 440, 530, 640, 770, 930, 1120, 1350, 1630, 1960, 2370, 2850, 3430,
    4140, 4980, 6000,
]
# fmt: on


@dataclass
class EnvelopeConfig:
    """edges_hz: first frequency (Hz) of each band, increasing from 0; the last band runs to Nyquist.
    step_db: gain step (dB); levels: symbols per band, gains (s - levels // 2) x step_db for s in 0..levels-1
    (5 levels of 8 dB: -16..+16 dB). phase_harmonics: models with pitch only; the tier also sends, per
    frame, the phase of the first that many harmonics of the input in `phase_levels` steps, which the
    harmonic source locks to (`HarmonicSynth.lock`); these rows follow the band gains.
    output_phase_edges_hz: consecutive pairs bound bands (Hz, below Nyquist) whose phase, input against the
    decode, the tier sends in `output_phase_levels` steps after its band gains; bands holding less than
    `output_phase_gate_db` dB of the window's input energy send 0 (no rotation), which entropy coding makes
    cheap. min_stages: the fewest RVQ stages `--kbps` planning sends beside this tier; priority: planning
    prefers tiers of higher priority, then the costlier (`inference/planner.py`)."""

    edges_hz: list[float] = field(default_factory=lambda: list(SPEECH_BAND_EDGES_HZ))
    step_db: float = 8.0
    levels: int = 5
    phase_harmonics: int = 0
    phase_levels: int = 16
    output_phase_edges_hz: list[float] = field(default_factory=list)
    output_phase_levels: int = 8
    output_phase_gate_db: float = -30.0
    min_stages: int = 1
    priority: int = 0

    def __post_init__(self) -> None:
        e = self.edges_hz
        if not e or e[0] != 0 or any(b <= a for a, b in zip(e, e[1:], strict=False)):
            raise ValueError(f"edges_hz must start at 0 and increase, got {e}")
        if self.step_db <= 0 or self.levels < 2:
            raise ValueError(f"step_db must be > 0 and levels >= 2, got {self.step_db}, {self.levels}")
        if self.phase_harmonics < 0 or self.phase_levels < 2:
            raise ValueError(
                f"phase_harmonics must be >= 0 and phase_levels >= 2, got {self.phase_harmonics}, {self.phase_levels}"
            )
        o = self.output_phase_edges_hz
        if len(o) == 1 or any(b <= a for a, b in zip(o, o[1:], strict=False)) or (o and o[0] < 0):
            raise ValueError(f"output_phase_edges_hz must be empty or at least 2 increasing values >= 0, got {o}")
        if self.output_phase_levels < 2 or self.min_stages < 1:
            raise ValueError(
                f"output_phase_levels must be >= 2 and min_stages >= 1, got {self.output_phase_levels}, "
                f"{self.min_stages}"
            )

    @property
    def bands(self) -> int:
        return len(self.edges_hz)

    @property
    def output_phases(self) -> int:
        """Output phase rows per frame."""
        return max(0, len(self.output_phase_edges_hz) - 1)

    @property
    def envelope_rows(self) -> int:
        """Rows `BandEnvelope` measures and applies: the band gains, then the output phases."""
        return self.bands + self.output_phases

    @property
    def rows(self) -> int:
        """Code rows per frame: the band gains, the output phases, then the harmonics' phases."""
        return self.envelope_rows + self.phase_harmonics

    @property
    def row_sizes(self) -> tuple[int, ...]:
        """Alphabet size of each of the tier's rows."""
        gains = (self.levels,) * self.bands + (self.output_phase_levels,) * self.output_phases
        return gains + (self.phase_levels,) * self.phase_harmonics


class BandEnvelope(StreamingModule):
    """`analyse(x, y)`: input and uncorrected decode `[batch, time]` -> symbols `[batch, envelope_rows, frames]`
    (band gains, then output phases); `forward(y, symbols)`: corrected decode. No parameters. Streams (see the
    module docstring)."""

    def __init__(self, sample_rate: int, hop: int, cfg: EnvelopeConfig) -> None:
        super().__init__()
        if cfg.edges_hz[-1] >= sample_rate / 2:
            raise ValueError(f"band edge {cfg.edges_hz[-1]} Hz is not below Nyquist ({sample_rate / 2} Hz)")
        if cfg.output_phases and cfg.output_phase_edges_hz[-1] > sample_rate / 2:
            raise ValueError(f"output phase edge {cfg.output_phase_edges_hz[-1]} Hz is above Nyquist")
        self.hop, self.cfg = hop, cfg
        freqs = torch.fft.rfftfreq(2 * hop, 1 / sample_rate)
        band_of_bin = torch.bucketize(freqs, torch.tensor(cfg.edges_hz, dtype=freqs.dtype), right=True) - 1
        self.register_buffer("band_of_bin", band_of_bin, persistent=False)
        # The bins inside the output phase bands and the band of each (a band may hold no bin: its row is 0).
        edges = torch.tensor(cfg.output_phase_edges_hz, dtype=freqs.dtype)
        phase_band = torch.bucketize(freqs, edges, right=True) - 1
        inside = (phase_band >= 0) & (phase_band < cfg.output_phases)
        self.register_buffer("phase_bins", inside.nonzero()[:, 0], persistent=False)
        self.register_buffer("phase_band_of_bin", phase_band[inside], persistent=False)
        hann = torch.hann_window(2 * hop, periodic=True)
        self.register_buffer("window", hann.sqrt(), persistent=False)
        # Energies are measured through a Hann window: its sidelobes leak far less across band edges.
        self.register_buffer("measure", hann, persistent=False)

    def _spectra(self, x: torch.Tensor, count: int, window: torch.Tensor | None = None) -> torch.Tensor:
        """`count` windows of x `[batch, (count + 1) * hop]` -> spectra `[batch, count, bins]` (window: the
        synthesis window unless given)."""
        if count == 0:
            return torch.zeros(x.shape[0], 0, self.hop + 1, dtype=torch.complex128, device=x.device)
        frames = x[:, : (count + 1) * self.hop].unfold(-1, 2 * self.hop, self.hop)
        return torch.fft.rfft(frames.double() * (self.window if window is None else window).double())

    def _band_energy(self, spec: torch.Tensor) -> torch.Tensor:
        power = spec.real**2 + spec.imag**2
        out = power.new_zeros(*power.shape[:-1], self.cfg.bands)
        return out.index_add_(-1, self.band_of_bin, power)

    def _with_tail(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """x after the samples kept from the last call (whole-file: after one hop of zeros)."""
        tail = self._state(name, x.shape[0]) if self._is_streaming else None
        tail = x.new_zeros(x.shape[0], self.hop) if tail is None else tail
        return torch.cat([tail, x], dim=-1)

    @torch.no_grad()
    def analyse(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Input x and uncorrected decode y `[batch, time]` -> int64 symbols `[batch, bands, frames]`, one
        frame per whole hop of y. x may run ahead of y (streaming with the pitch lookahead); whole-file, both
        cover the same frames."""
        frames = y.shape[-1] // self.hop
        xs, ys = self._with_tail("x_tail", x.float()), self._with_tail("y_tail", y.float())
        if xs.shape[-1] < (frames + 1) * self.hop:
            raise ValueError(f"input has {x.shape[-1]} samples, fewer than the decode's {frames} frames")
        if self._is_streaming:
            self._streaming_state["x_tail"] = xs[:, frames * self.hop :]
            self._streaming_state["y_tail"] = ys[:, frames * self.hop : (frames + 1) * self.hop]
        return self.symbols(self._spectra(xs, frames, self.measure), self._spectra(ys, frames, self.measure))

    @torch.no_grad()
    def spectra(self, x: torch.Tensor) -> torch.Tensor:
        """The spectra `analyse` measures a whole file x `[batch, frames * hop]` with, `[batch, frames, bins]`
        (complex128): the same for every tier of a model (one hop), so a caller that analyses the same audio
        for several tiers computes them once and calls `symbols`."""
        frames = x.shape[-1] // self.hop
        return self._spectra(self._with_tail("x_tail", x.float()), frames, self.measure)

    @torch.no_grad()
    def symbols(self, xspec: torch.Tensor, yspec: torch.Tensor) -> torch.Tensor:
        """`analyse` from the input's and the decode's `spectra` -> int64 symbols `[batch, bands, frames]`."""
        floor = 1e-10
        target = self._band_energy(xspec)
        ratio_db = 10 * torch.log10((target + floor) / (self._band_energy(yspec) + floor))
        half = self.cfg.levels // 2
        symbols = ((ratio_db / self.cfg.step_db).round().long() + half).clamp(0, self.cfg.levels - 1)
        if self.cfg.output_phases:
            symbols = torch.cat([symbols, self._phase_symbols(xspec, yspec, target.sum(-1))], dim=-1)
        return symbols.transpose(1, 2)

    def _phase_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum of `[batch, count, bins]` values over each output phase band -> `[batch, count, phases]`."""
        out = values.new_zeros(*values.shape[:-1], self.cfg.output_phases)
        return out.index_add_(-1, self.phase_band_of_bin, values[..., self.phase_bins])

    def _phase_symbols(self, xspec: torch.Tensor, yspec: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        """Hann-windowed spectra of input and decode `[batch, count, bins]` and the input's window energies
        `[batch, count]` -> int64 output phase symbols `[batch, count, phases]`: the angle of the band's
        cross-spectrum in `output_phase_levels` steps, 0 where the band is below the gate."""
        levels = self.cfg.output_phase_levels
        cross = self._phase_sum(xspec * yspec.conj())
        steps = torch.round(torch.angle(cross) * (levels / (2 * torch.pi))).long() % levels
        power = self._phase_sum(xspec.real**2 + xspec.imag**2)
        quiet = power <= energy[..., None] * 10 ** (self.cfg.output_phase_gate_db / 10)
        return steps.masked_fill(quiet, 0)

    def _synthesise(self, ys: torch.Tensor, gains_db: torch.Tensor, phases: torch.Tensor | None = None) -> torch.Tensor:
        """Windows of ys with per-band gains `[batch, count, bands]` and output phase symbols `[batch, count,
        phases]` (None: none) -> overlap-added audio `[batch, (count + 1) * hop]` starting one hop before the
        first window's centre."""
        count = gains_db.shape[1]
        spec = self._spectra(ys, count) * torch.pow(10.0, gains_db[..., self.band_of_bin] / 20)
        if phases is not None and phases.shape[-1]:
            angle = phases[..., self.phase_band_of_bin].double() * (2 * torch.pi / self.cfg.output_phase_levels)
            spec[..., self.phase_bins] *= torch.polar(torch.ones_like(angle), angle)
        frames = torch.fft.irfft(spec, n=2 * self.hop) * self.window.double()  # [batch, count, 2 hop]
        out = frames.new_zeros(ys.shape[0], (count + 1) * self.hop)
        out[:, : count * self.hop] += frames[..., : self.hop].flatten(1)
        out[:, self.hop :] += frames[..., self.hop :].flatten(1)
        return out

    def forward(self, y: torch.Tensor, symbols: torch.Tensor) -> torch.Tensor:
        """Decode y `[batch, frames * hop]` and symbols `[batch, envelope_rows, frames]` -> corrected audio.
        Whole-file: `[batch, frames * hop]`; streaming: the samples completed so far (one frame behind; `flush`
        ends)."""
        frames = symbols.shape[-1]
        if y.shape[-1] != frames * self.hop:
            raise ValueError(f"decode has {y.shape[-1]} samples, symbols {frames} frames of {self.hop}")
        if frames == 0:
            return y.new_zeros(y.shape[0], 0)
        if symbols.shape[1] != self.cfg.envelope_rows:
            raise ValueError(f"expected {self.cfg.envelope_rows} envelope rows, got {symbols.shape[1]}")
        per_frame = symbols.transpose(1, 2)
        gains = (per_frame[..., : self.cfg.bands].double() - self.cfg.levels // 2) * self.cfg.step_db
        phases = per_frame[..., self.cfg.bands :]
        ys = self._with_tail("y_tail", y.float())
        if not self._is_streaming:  # window `frames`, past the last symbol, passes at 0 dB and phase 0
            ys = torch.cat([ys, ys.new_zeros(ys.shape[0], self.hop)], dim=-1)
            gains = torch.cat([gains, gains.new_zeros(gains.shape[0], 1, gains.shape[2])], dim=1)
            phases = torch.cat([phases, phases.new_zeros(phases.shape[0], 1, phases.shape[2])], dim=1)
            return self._synthesise(ys, gains, phases)[:, self.hop : (frames + 1) * self.hop].to(y.dtype)
        out = self._overlap(self._synthesise(ys, gains, phases))
        self._streaming_state["y_tail"] = ys[:, frames * self.hop :]
        return out.to(y.dtype)

    def _overlap(self, out: torch.Tensor) -> torch.Tensor:
        """Streaming: add the previous call's unfinished hop, keep this call's; drop the part before t = 0."""
        carry = self._state("carry", out.shape[0])
        if carry is not None:
            out[:, : self.hop] += carry
        self._streaming_state["carry"] = out[:, -self.hop :]
        done = out[:, : -self.hop]
        skip = self._state("skip", out.shape[0])  # samples before t = 0 still to drop
        left = self.hop if skip is None else int(skip[0])
        self._streaming_state["skip"] = torch.full((out.shape[0],), max(0, left - done.shape[-1]))
        return done[:, left:]

    @torch.no_grad()
    def flush(self) -> torch.Tensor | None:
        """End of a streamed decode: the last frame's samples `[batch, hop]`, or None if nothing was decoded."""
        tail = self._streaming_state.pop("y_tail", None) if self._is_streaming else None
        if tail is None:
            return None
        ys = torch.cat([tail, torch.zeros_like(tail)], dim=-1)
        gains = ys.new_zeros(ys.shape[0], 1, self.cfg.bands, dtype=torch.float64)
        return self._overlap(self._synthesise(ys, gains)).float()
