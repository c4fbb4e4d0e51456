"""Transmitted pitch and a harmonic synthesiser: the decoder's voice source.

The SEANet decoder on its own places voiced periods on the grid of its first upsampling stage (periods that
are multiples of 40 samples in the 16 kHz speech model: 400/k Hz), whatever the speaker's pitch, and its
codes hardly carry the pitch at all (docs/results/harmonics). With `CodecConfig.pitch` set, the encoder
also tracks F0 once per code frame and sends it as one 7-bit symbol (0 = unvoiced, 1..127 = log-spaced
60..400 Hz, 26 cents apart); the decoder adds a sum of harmonics at that F0, with amplitudes predicted from
the quantized latent, to the SEANet output scaled by a gain also predicted from the latent (DDSP's harmonic
synthesiser, Engel et al. 2020; the source-filter split of NSF, Wang et al. 2019). The SEANet branch keeps
the noise and the envelope details. `losses/harmonic.py` teaches the amplitudes.

Frame t's F0 comes from the 2-hop window that ends where frame t ends, so the tracker is as causal as the
encoder. Inside frame t the synthesiser glides from frame t-1's F0, amplitudes and gain to frame t's, so
its pitch lags the tracker's by about one frame (20 ms): a one-frame lookahead in the tracker would remove
that at the cost of 20 ms more streaming latency (not done).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..dsp.pitch import MIN_F0, PITCH_SYMBOLS, f0_to_symbols, normalised_autocorrelation, peak_lag, symbols_to_f0
from .activations import ELU
from .streaming import StreamingConv1d, StreamingModule

# Adam moves every weight by about lr per step whatever its gradient, so a log-amplitude head at the usual
# scale needs ~10^4 fine-tuning steps to get from silence to speech level; the gain makes it ~10^3 (the
# equalised learning rate trick); at gain 1 the branch stayed silent for over 1000 fine-tuning steps.
AMPLITUDE_GAIN = 10.0

# Sines per chunk of the CPU inference source (`HarmonicSynth._sounding_source`): 2 MiB of float32, 25 frames
# of 64 harmonics at hop 320; 512 KiB and 8 MiB chunks were slower.
_CHUNK_ELEMENTS = 1 << 19


@dataclass
class PitchConfig:
    """harmonics: sines summed by the synthesiser (those above 0.95 x Nyquist are muted); voiced: the
    autocorrelation peak above which a frame counts as voiced; silence_db: frames whose mean square is
    below this level (dB re full scale) count as unvoiced: an absolute gate, so that a frame's symbol
    does not depend on the rest of the file; hidden: channels of the amplitude head; lookahead: frames of
    future audio the tracker reads (0 or 1). With 0, a frame's F0 is measured on a window centred one frame
    before the frame's end, where the synthesiser puts it: the sent pitch lags the voice by 20 ms (at a 50 Hz
    frame rate). With 1 the window is centred on the frame's end, at 20 ms more encoder latency. The
    encoder's choice alone: the decoder, and so the model hash, are the same either way."""

    harmonics: int = 64
    voiced: float = 0.5
    silence_db: float = -55.0
    hidden: int = 256
    lookahead: int = 0

    def __post_init__(self) -> None:
        if self.harmonics < 1 or self.hidden < 1:
            raise ValueError(f"harmonics and hidden must be positive, got {self.harmonics}, {self.hidden}")
        if not 0.0 < self.voiced < 1.0:
            raise ValueError(f"voiced must be in (0, 1), got {self.voiced}")
        if self.lookahead not in (0, 1):
            raise ValueError(f"lookahead must be 0 or 1 frames, got {self.lookahead}")

    @property
    def bits_per_frame(self) -> float:
        return math.log2(PITCH_SYMBOLS)


class PitchTracker(StreamingModule):
    """Audio `[batch, time]` -> pitch symbols `[batch, ceil(time / hop)]`: the F0 of the `2 * hop` samples
    ending at each frame's end, or one frame later with `lookahead` (zeros outside the signal), from
    `dsp.pitch.peak_lag`. Streams: it keeps the samples it has not used yet, so chunked tracking
    (then `flush`) equals whole-signal tracking; with lookahead it runs one frame behind the input."""

    def __init__(self, sample_rate: int, hop: int, cfg: PitchConfig) -> None:
        super().__init__()
        self.sample_rate, self.hop, self.cfg = sample_rate, hop, cfg

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hop = self.hop
        x = x.float()
        if self._is_streaming:
            pending = self._state("pending", x.shape[0])
            if pending is None:
                pending = x.new_zeros(x.shape[0], hop * (1 - self.cfg.lookahead))
            x = torch.cat([pending, x], dim=-1)
            frames = (x.shape[-1] - hop) // hop
            self._streaming_state["pending"] = x[..., frames * hop :]
            x = x[..., : (frames + 1) * hop]
        else:
            frames = -(-x.shape[-1] // hop)
            ahead = self.cfg.lookahead
            x = F.pad(x, (hop * (1 - ahead), (frames + ahead) * hop - x.shape[-1]))
        if frames == 0:
            return torch.zeros(x.shape[0], 0, dtype=torch.long, device=x.device)
        # An absolute floor well below the silence gate: a floor relative to the loudest frame in sight made a
        # quiet frame's symbol depend on the chunk a stream happened to cut.
        floor_db = self.cfg.silence_db - 20.0
        acf, energy_db = normalised_autocorrelation(x, self.sample_rate, frame=2 * hop, hop=hop, floor_db=floor_db)
        lag, best = peak_lag(acf, self.sample_rate)
        voiced = (best > self.cfg.voiced) & (energy_db > self.cfg.silence_db)
        return f0_to_symbols(torch.where(voiced, self.sample_rate / lag, torch.zeros_like(lag)))

    def flush(self, batch: int) -> torch.Tensor:
        """End of a stream: the symbols of the frames whose lookahead runs past the end (zeros after it, as
        the whole-signal pass pads), `[batch, lookahead]`; `[batch, 0]` outside streaming or without lookahead."""
        if not self._is_streaming or self._state("pending", batch) is None:
            return torch.zeros(batch, 0, dtype=torch.long)
        pending = self._streaming_state["pending"]
        return self(pending.new_zeros(batch, self.hop * self.cfg.lookahead))


def _glide(start: torch.Tensor, end: torch.Tensor, hop: int) -> torch.Tensor:
    """Per-sample linear glide over each frame from `start` to `end` (both `[..., frames]`) ->
    `[..., frames * hop]`; the frame's last sample reaches `end`."""
    ramp = torch.arange(1, hop + 1, device=end.device, dtype=end.dtype) / hop
    return (start.unsqueeze(-1) + (end - start).unsqueeze(-1) * ramp).flatten(-2)


def _previous(values: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """values `[..., frames]` shifted right by one frame, `before` `[..., 1]` first."""
    return torch.cat([before, values[..., :-1]], dim=-1)


class HarmonicSynth(StreamingModule):
    """Quantized latent `[batch, latent_dim, frames]` and pitch symbols `[batch, frames]` -> audio
    `[batch, 1, frames * hop]`: sum over harmonics k of a_k(t) sin(k phi(t)), phi the integral of F0, plus
    the SEANet decoder's output (`residual`) times a gain g(t) in (0, 2). Amplitudes and gain come from
    causal conv heads on the latent; harmonics above 0.95 x Nyquist and unvoiced frames are silent.
    Streams: it carries the phase and the last frame's F0, voicing, amplitudes and gain."""

    def __init__(self, latent_dim: int, sample_rate: int, hop: int, cfg: PitchConfig) -> None:
        super().__init__()
        self.sample_rate, self.hop, self.cfg = sample_rate, hop, cfg
        self.head = nn.Sequential(
            StreamingConv1d(latent_dim, cfg.hidden, 3),
            ELU(),
            StreamingConv1d(cfg.hidden, cfg.harmonics, 1),
        )
        # Starts silent (weight-norm gain 0, every harmonic at softplus(-10) ~ -87 dB), so adding the branch to
        # trained weights leaves their output as it was (even 1e-3 per harmonic, a flat buzz, raised the mel loss).
        last = self.head[-1].conv
        nn.init.constant_(last.bias, -10.0 / AMPLITUDE_GAIN)
        nn.init.zeros_(last.parametrizations.weight.original0)
        # The residual gain lets the model quieten the SEANet branch where the harmonics take over faster than
        # the decoder's own weights unlearn their voiced energy (noise masked the harmonics above 1 kHz after
        # 1000 fine-tuning steps without it). It starts at exactly 1.
        self.gain_head = StreamingConv1d(latent_dim, 1, 3)
        nn.init.zeros_(self.gain_head.conv.bias)
        nn.init.zeros_(self.gain_head.conv.parametrizations.weight.original0)
        self.register_buffer("orders", torch.arange(1, cfg.harmonics + 1, dtype=torch.float32), persistent=False)

    def amplitudes(self, z: torch.Tensor) -> torch.Tensor:
        """Latent `[batch, latent_dim, frames]` -> amplitude of each harmonic `[batch, harmonics, frames]`
        (linear, full scale 1), reached at each frame's last sample."""
        return F.softplus(AMPLITUDE_GAIN * self.head(z).float())

    def _sum_harmonics(self, sines: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        """sum_k a_k(t) sines_k(t), a_k gliding linearly over each frame from `start` to `end` (both `[batch,
        harmonics, frames]`); sines `[batch, frames, hop, harmonics]` -> `[batch, 1, frames * hop]`. One
        contraction per frame against (start, slope) instead of an amplitude per sample and harmonic: the
        harmonic source was as costly as the whole SEANet decoder. The sines are the product's right operand,
        transposed ([2, harmonics] x [harmonics, hop] per frame): the CPU's batched matmul ran that 4x faster
        than [hop, harmonics] x [harmonics, 2], and needs no copy of the sines either way."""
        batch, count, frames = start.shape
        ramp = torch.arange(1, self.hop + 1, device=sines.device, dtype=sines.dtype) / self.hop
        coef = torch.stack([start, end - start], dim=1).to(sines.dtype)  # [batch, 2, harmonics, frames]
        with torch.autocast(sines.device.type, enabled=False):  # a float32 sum, like the amplitudes
            parts = torch.matmul(coef.permute(0, 3, 1, 2), sines.transpose(-1, -2))  # [batch, frames, 2, hop]
        return (parts[:, :, 0] + parts[:, :, 1] * ramp).reshape(batch, 1, frames * self.hop)

    def _sounding_source(
        self,
        angle: torch.Tensor,
        offsets: torch.Tensor | None,
        start: torch.Tensor,
        end: torch.Tensor,
        needed: torch.Tensor,
    ) -> torch.Tensor:
        """`_sum_harmonics` of the sines of `angle` (`[batch, frames, hop, 1]`, plus `offsets`), computed only for
        the harmonics that sound: a few frames at a time, each chunk up to the highest harmonic any of its
        frames needs (`needed`, `[frames]`; 0 for silent frames, whose chunks are zeros). Inference on the
        CPU: sines above 0.95 x Nyquist and in unvoiced stretches have zero amplitude, and a chunk's sines stay
        in cache. The same sums as the whole pass, but for zero terms and float32 rounding."""
        batch, frames, hop, _ = angle.shape
        step = max(1, _CHUNK_ELEMENTS // (batch * hop * self.cfg.harmonics))
        per_frame = needed.tolist()
        out = angle.new_zeros(batch, 1, frames * hop)
        for first in range(0, frames, step):
            count = max(per_frame[first : first + step])
            if count == 0:
                continue
            span = slice(first, first + step)
            chunk_offsets = None if offsets is None else offsets[:, span]
            part = self._harmonic_sum(angle[:, span], chunk_offsets, start[..., span], end[..., span], count)
            out[..., first * hop : first * hop + part.shape[-1]] = part
        return out

    def _harmonic_sum(
        self,
        angle: torch.Tensor,
        offsets: torch.Tensor | None,
        start: torch.Tensor,
        end: torch.Tensor,
        count: int,
    ) -> torch.Tensor:
        """`_sum_harmonics` over harmonics 1..count: their sines at k * angle (`[batch, frames, hop, 1]`) plus the
        locked ones' `offsets` (`[batch, frames, hop, locked]`), amplitudes from `start`/`end`'s first `count`."""
        # k * phase grows to 64 x 2 pi: fine in float32 (error ~1e-5 rad).
        args = angle * self.orders[:count].to(angle.dtype)  # [batch, frames, hop, count]
        if offsets is not None:
            locked = min(count, offsets.shape[-1])
            args[..., :locked] += offsets[..., :locked]
        return self._sum_harmonics(args.sin_(), start[:, :count], end[:, :count])

    def _track(self, symbols: torch.Tensor, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The source's F0 and phase for pitch symbols `[batch, frames]`, continuing the streamed state without
        changing it: filled / start_f0 / voiced / was_voiced `[batch, frames]` and the per-sample phase
        `[batch, frames * hop]` (float64, wrapped to [0, 2 pi))."""
        batch, frames = symbols.shape
        f0 = symbols_to_f0(symbols).to(dtype)
        voiced = (symbols > 0).to(dtype)
        # Unvoiced frames keep the last voiced F0, so an offset fades out at the right pitch; a glide starts
        # from the previous frame's F0 only if that frame was voiced, so an onset starts at its own pitch.
        # Everything depends on past frames only: streaming gives the whole-file output.
        last = self._state("f0", batch)
        last = f0.new_full((batch, 1), MIN_F0) if last is None else last.to(dtype)
        frame_idx = torch.arange(frames, device=f0.device).expand(batch, frames)
        last_voiced = torch.where(voiced > 0, frame_idx, -1).cummax(dim=-1).values
        filled = torch.where(last_voiced >= 0, f0.gather(-1, last_voiced.clamp_min(0)), last)
        prev_voiced = self._state("voiced", batch)
        prev_voiced = f0.new_zeros(batch, 1) if prev_voiced is None else prev_voiced.to(dtype)
        was_voiced = _previous(voiced, prev_voiced)
        start_f0 = torch.where(was_voiced > 0, _previous(filled, last), filled)
        phase0 = self._state("phase", batch)
        phase0 = f0.new_zeros(batch, 1, dtype=torch.float64) if phase0 is None else phase0
        f0_s = torch.exp2(_glide(torch.log2(start_f0), torch.log2(filled), self.hop))  # [batch, time]
        # Phase: float64 running sum, wrapped, so long files keep sample-accurate phase in float32 sines.
        step = (2 * math.pi / self.sample_rate) * f0_s.double()
        phase = torch.remainder(phase0 + torch.cumsum(step, dim=-1), 2 * math.pi)
        return dict(filled=filled, start_f0=start_f0, voiced=voiced, was_voiced=was_voiced, phase=phase)

    @torch.no_grad()
    def lock(self, x: torch.Tensor, symbols: torch.Tensor, count: int, levels: int) -> torch.Tensor:
        """Encoder side of phase locking: input x `[batch, time]` (streaming: the new samples, which run one
        frame ahead of `symbols`) and the frames' pitch symbols `[batch, frames]` -> phase symbols `[batch,
        count, frames]` in 0..levels-1: for harmonics 1..count, the offset (in steps of 2 pi / levels) that
        brings sin(k phi + offset) onto the input's k-th harmonic at each frame's end. Measured through a Hann
        window over the frame and the next (phi carried on at the frame's F0 there), so it reads the same one
        frame of lookahead as the pitch tracker. Unvoiced frames send 0. Leaves the synthesiser's state as is
        but for the input it has not used yet."""
        batch, frames = symbols.shape
        hop = self.hop
        xs = x.double()
        if self._is_streaming:
            pending = self._state("lock_x", batch)
            xs = xs if pending is None else torch.cat([pending, xs], dim=-1)
            self._streaming_state["lock_x"] = xs[:, frames * hop :]
        need = (frames + 1) * hop  # past the input's end (whole file, or a stream's flush) it reads zeros
        xs = F.pad(xs, (0, max(0, need - xs.shape[-1])))[:, :need]
        if frames == 0:
            return symbols.new_zeros(batch, count, 0)
        track = self._track(symbols, torch.float64)
        phase = track["phase"].view(batch, frames, hop)
        ahead = torch.arange(1, hop + 1, device=x.device, dtype=torch.float64)
        omega = (2 * math.pi / self.sample_rate) * track["filled"]
        phase = torch.cat([phase, phase[..., -1:] + omega.unsqueeze(-1) * ahead], dim=-1)  # [batch, frames, 2 hop]
        windows = xs.unfold(-1, 2 * hop, hop) * torch.hann_window(2 * hop, dtype=torch.float64, device=x.device)
        # e^{-ik phi} as powers of e^{-i phi}: one sine and cosine per sample instead of one complex exp per
        # harmonic (the rounding error after `count` products, ~1e-15, is far below a phase step)
        base = torch.polar(torch.ones_like(phase), -phase)  # [batch, frames, 2 hop]
        turn, c = base, []
        for _ in range(count):
            c.append((windows * turn).sum(-1))
            turn = turn * base
        c = torch.stack(c, dim=1)  # [batch, count, frames]
        # x ~ cos(k phi + d) gives c ~ e^{i d}; sin(k phi + d + pi / 2) = cos(k phi + d)
        offset = torch.angle(c) + math.pi / 2
        out = torch.remainder(torch.round(offset * (levels / (2 * math.pi))), levels).long()
        return out * (symbols > 0).unsqueeze(1)

    def _offsets(self, phases: torch.Tensor, levels: int) -> torch.Tensor:
        """Phase symbols `[batch, count, frames]` -> per-sample offsets `[batch, count, frames * hop]`, each
        frame gliding the short way round from the previous frame's offset to its own."""
        batch, count, _ = phases.shape
        end = phases.double() * (2 * math.pi / levels)
        prev = self._state("lock_offset", batch)
        start = _previous(end, end[..., :1] if prev is None else prev)
        turn = torch.remainder(end - start + math.pi, 2 * math.pi) - math.pi
        if self._is_streaming:
            self._streaming_state["lock_offset"] = end[..., -1:]
        return _glide(start, start + turn, self.hop)

    def forward(
        self,
        z: torch.Tensor,
        symbols: torch.Tensor,
        residual: torch.Tensor | None = None,
        amps: torch.Tensor | None = None,
        phases: torch.Tensor | None = None,
        phase_levels: int = 16,
    ) -> torch.Tensor:
        """residual: the SEANet output `[batch, 1, frames * hop]` (None: the harmonics alone); amps:
        `amplitudes(z)` when the caller already has them; phases: `lock`'s symbols `[batch, count, frames]`
        for the first `count` harmonics (None: free-running phase)."""
        out = self.source(z, symbols, amps, phases, phase_levels)
        return out if residual is None else self.mix(z, out, residual)

    def source(
        self,
        z: torch.Tensor,
        symbols: torch.Tensor,
        amps: torch.Tensor | None = None,
        phases: torch.Tensor | None = None,
        phase_levels: int = 16,
    ) -> torch.Tensor:
        """The harmonics alone, `[batch, 1, frames * hop]` float32 (`forward` without a residual)."""
        batch, frames = symbols.shape
        if z.shape[0] != batch or z.shape[-1] != frames:
            raise ValueError(f"latent {tuple(z.shape)} and pitch {tuple(symbols.shape)} frames differ")
        if frames == 0:
            return z.new_zeros(batch, 1, 0)
        amps = self.amplitudes(z) if amps is None else amps.float()  # float32 even under bf16 autocast
        z = z.float()
        track = self._track(symbols, z.dtype)
        filled, start_f0, voiced, phase = track["filled"], track["start_f0"], track["voiced"], track["phase"]
        prev_amps = self._state("amps", batch)
        prev_amps = amps[..., :1] if prev_amps is None else prev_amps
        gate = _glide(track["was_voiced"], voiced, self.hop)
        harmonics = self.orders.to(z.dtype)
        angle = phase.to(z.dtype).view(batch, frames, self.hop, 1)
        offsets = None
        if phases is not None and phases.shape[1]:
            count = phases.shape[1]
            offsets = self._offsets(phases, phase_levels).to(z.dtype)  # [batch, count, time]
            offsets = offsets.transpose(1, 2).reshape(batch, frames, self.hop, count)
        # A harmonic sounds in a frame if it stays below 0.95 x Nyquist at the frame's highest F0 (per frame,
        # not per sample: the amplitudes are then per-frame values, which `_sum_harmonics` needs).
        highest = torch.maximum(start_f0, filled).unsqueeze(1)
        audible = (harmonics[None, :, None] * highest < 0.475 * self.sample_rate).to(z.dtype)
        start, end = _previous(amps, prev_amps) * audible, amps * audible
        grads = torch.is_grad_enabled() and (z.requires_grad or amps.requires_grad)
        if z.device.type == "cpu" and not grads:
            # harmonics that sound in each frame: the audible ones (a prefix) where the gate is open
            open_gate = (track["was_voiced"] > 0) | (voiced > 0)
            needed = (audible.sum(1) * open_gate).amax(0).long()
            out = self._sounding_source(angle, offsets, start, end, needed)
        else:
            out = self._harmonic_sum(angle, offsets, start, end, self.cfg.harmonics)
        out = out * gate.unsqueeze(1)
        if self._is_streaming:
            state = dict(f0=filled[:, -1:], voiced=voiced[:, -1:], amps=amps[..., -1:], phase=phase[:, -1:])
            self._streaming_state.update(state)
        return out

    def mix(self, z: torch.Tensor, source: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """`source` (the harmonics, `[batch, 1, time]`) plus the SEANet output `residual` scaled by a gain the
        latent z `[batch, latent_dim, frames]` predicts, gliding per frame: the decoder's output."""
        batch = z.shape[0]
        if source.shape[-1] == 0:
            return source
        gain = 2 * torch.sigmoid(AMPLITUDE_GAIN * self.gain_head(z.float()).float()[:, 0])  # [batch, frames]
        prev_gain = self._state("gain", batch)
        prev_gain = gain[:, :1] if prev_gain is None else prev_gain
        out = source + residual.float() * _glide(_previous(gain, prev_gain), gain, self.hop).unsqueeze(1)
        if self._is_streaming:
            self._streaming_state["gain"] = gain[:, -1:]
        return out
