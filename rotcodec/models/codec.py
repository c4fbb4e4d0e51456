"""The codec: SEANet encoder -> residual VQ -> SEANet decoder.

Audio channels are coded independently: `[batch, channels, time]` is folded into `[batch * channels, 1,
time]`, so a stereo file costs twice the bitrate of a mono one (`bitrate` is per channel).

Default config = the `speech16k` model (~2.0 M parameters, ~0.57 GFLOP per audio second each way): 16 kHz
mono, strides [2, 4, 5, 8] (hop 320 -> 50 Hz frames), base channels 16 (16 -> 256), residual units with
dilations 1, 3, 9, latent 128, RVQ 8 x 1024 (10 bits/code -> 0.5 kbps per stage, 4 kbps with all 8).
24 kHz with the same strides gives 75 Hz frames (SoundStream/EnCodec).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from ..bitstream.layout import StreamLayout
from ..quantize import ResidualVQ, RVQConfig
from .activations import ACTIVATIONS
from .envelope import BandEnvelope, EnvelopeConfig
from .harmonic import PITCH_SYMBOLS, HarmonicSynth, PitchConfig, PitchTracker, symbols_to_f0
from .seanet import SEANetDecoder, SEANetEncoder
from .streaming import StreamingModule


class CodecInputError(ValueError):
    """Audio or codes of the wrong shape for this codec."""


@dataclass
class CodecConfig:
    """sample_rate (Hz) and audio channels; SEANet: base_channels (doubling per stage up to max_channels),
    strides in encoder order (hop = their product), latent_dim (must equal quantizer.dim), dilations of the
    residual units in each stage (their count = residual units per stage; [1, 3, 9] is SoundStream's),
    kernel sizes, compress (residual bottleneck factor), causal (False: centred padding, no streaming),
    decoder_base_channels (None: same as the encoder), activation ("elu" or "snake", see
    `models/activations.py`), decoder_activation (None: same as the encoder); quantizer: the residual VQ;
    pitch: a sent pitch track and harmonic source (`models/harmonic.py`); envelope: sent band-energy
    corrections (`models/envelope.py`), the tier training applies (tier 0); envelope_tiers: finer or coarser
    corrections a stream may send instead (tiers 1, 2, ...), chosen by rate (`CodecModel.plan`);
    decoder_source: the SEANet decoder also reads the harmonic source (`SEANetDecoder.source_in`, zero at
    first), so its branch can follow the source's phase rather than only add to it; models with pitch."""

    sample_rate: int = 16000
    channels: int = 1
    base_channels: int = 16
    strides: list[int] = field(default_factory=lambda: [2, 4, 5, 8])
    latent_dim: int = 128
    dilations: list[int] = field(default_factory=lambda: [1, 3, 9])
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    compress: int = 2
    max_channels: int = 512
    causal: bool = True
    decoder_base_channels: int | None = None
    activation: str = "elu"
    decoder_activation: str | None = None
    quantizer: RVQConfig = field(default_factory=lambda: RVQConfig(dim=128, n_q=8, codebook_size=1024))
    pitch: PitchConfig | None = None
    envelope: EnvelopeConfig | None = None
    envelope_tiers: list[EnvelopeConfig] = field(default_factory=list)
    decoder_source: bool = False

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.channels <= 0:
            raise ValueError(f"sample_rate and channels must be positive, got {self.sample_rate}, {self.channels}")
        if not self.strides or any(s < 1 for s in self.strides):
            raise ValueError(f"strides must be a non-empty list of positive ints, got {self.strides}")
        decoder_act = self.decoder_activation or self.activation  # None: the encoder's
        for name, act in (("activation", self.activation), ("decoder_activation", decoder_act)):
            if act not in ACTIVATIONS:
                raise ValueError(f"{name} must be one of {', '.join(ACTIVATIONS)}, got {act!r}")
        if self.quantizer.dim != self.latent_dim:
            raise ValueError(f"quantizer.dim ({self.quantizer.dim}) must equal latent_dim ({self.latent_dim})")
        if self.envelope_tiers and self.envelope is None:
            raise ValueError("envelope_tiers need an envelope (tier 0)")
        if self.decoder_source and self.pitch is None:
            raise ValueError("decoder_source needs pitch: the source is the harmonic synthesiser's")

    @property
    def envelopes(self) -> list[EnvelopeConfig]:
        """All envelope tiers: `envelope`, then `envelope_tiers` (empty without an envelope)."""
        return [] if self.envelope is None else [self.envelope, *self.envelope_tiers]

    @property
    def hop_length(self) -> int:
        return math.prod(self.strides)


@dataclass
class CodecOutput:
    """audio `[batch, channels, time]`, codes `[batch, channels, n_q, frames]` int64, vq_loss (scalar,
    already weighted by the quantizer), stats (quantizer statistics, tensors), latent: the unquantized
    encoder output `[batch * channels, latent_dim, frames]` (as `Codec.embed`); for models with `pitch`: f0,
    the transmitted F0 `[batch * channels, frames]` in Hz (0 = unvoiced), and harmonic_amps, the harmonic
    source's amplitudes `[batch * channels, harmonics, frames]` (for `losses.harmonic`); locked: how many
    of the source's harmonics were phase-locked to the input (`forward(..., lock=True)`), 0 if none."""

    audio: torch.Tensor
    codes: torch.Tensor
    vq_loss: torch.Tensor
    stats: dict[str, torch.Tensor]
    latent: torch.Tensor
    f0: torch.Tensor | None = None
    harmonic_amps: torch.Tensor | None = None
    locked: int = 0

    @property
    def harmonic(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(f0, harmonic_amps) for `GeneratorLoss(..., harmonic=)`; None for models without pitch."""
        return None if self.f0 is None or self.harmonic_amps is None else (self.f0, self.harmonic_amps)


class Codec(StreamingModule):
    """Neural audio codec. Training: `forward`; inference: `encode` / `decode`, also chunk by chunk inside
    `with codec.streaming():` (chunk lengths that are multiples of `hop_length`, then `encode_flush()`, give the
    whole-file codes)."""

    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        self.config = cfg
        common = dict(
            channels=1,
            latent_dim=cfg.latent_dim,
            strides=cfg.strides,
            dilations=cfg.dilations,
            kernel_size=cfg.kernel_size,
            last_kernel_size=cfg.last_kernel_size,
            residual_kernel_size=cfg.residual_kernel_size,
            compress=cfg.compress,
            max_channels=cfg.max_channels,
            causal=cfg.causal,
        )
        self.encoder = SEANetEncoder(base_channels=cfg.base_channels, activation=cfg.activation, **common)
        self.quantizer = ResidualVQ.from_config(cfg.quantizer)
        dec_base = cfg.decoder_base_channels or cfg.base_channels
        dec_act = cfg.decoder_activation or cfg.activation
        self.decoder = SEANetDecoder(
            base_channels=dec_base, activation=dec_act, source_channels=int(cfg.decoder_source), **common
        )
        self.pitch_tracker: PitchTracker | None = None
        self.harmonic: HarmonicSynth | None = None
        if cfg.pitch is not None:
            self.pitch_tracker = PitchTracker(cfg.sample_rate, cfg.hop_length, cfg.pitch)
            self.harmonic = HarmonicSynth(cfg.latent_dim, cfg.sample_rate, cfg.hop_length, cfg.pitch)
        if self.harmonic is None and any(t.phase_harmonics for t in cfg.envelopes):
            raise ValueError("envelope tiers with phase_harmonics need a model with pitch")
        self.envelopes = torch.nn.ModuleList(
            BandEnvelope(cfg.sample_rate, cfg.hop_length, tier) for tier in cfg.envelopes
        )

    @property
    def envelope(self) -> BandEnvelope | None:
        """Envelope tier 0, the one training applies (None without an envelope)."""
        return self.envelopes[0] if len(self.envelopes) else None

    # -- arithmetic ----------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def hop_length(self) -> int:
        """Audio samples per code frame."""
        return self.config.hop_length

    @property
    def frame_rate(self) -> float:
        """Code frames per second (Hz)."""
        return self.sample_rate / self.hop_length

    @property
    def n_q(self) -> int:
        return self.quantizer.n_q

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def pitch_rows(self) -> int:
        """Code rows before the RVQ stages: 1 (the pitch symbols) for models with `pitch`, else 0."""
        return 0 if self.harmonic is None else 1

    def layout(self, n_q: int | None = None, envelope: int | None = 0, last_codes: int | None = None) -> StreamLayout:
        """The rows of a stream with n_q stages (None: all) and the band gains of envelope tier `envelope`
        (None: none). Tier 0 on a model without an envelope means none: every model accepts the default.
        `last_codes`: the last stage trimmed to its first that many codes (None, or the codebook size: whole)."""
        if isinstance(envelope, bool) or not (envelope is None or isinstance(envelope, int)):
            raise CodecInputError(f"envelope must be a tier index or None, got {envelope!r}")
        if envelope == 0 and not len(self.envelopes):
            envelope = None
        if envelope is not None and not 0 <= envelope < len(self.envelopes):
            raise CodecInputError(f"envelope tier {envelope} is not one of this model's {len(self.envelopes)}")
        rows = 0 if envelope is None else self.envelopes[envelope].cfg.rows
        if last_codes is not None and not 2 <= last_codes <= self.codebook_size:
            raise CodecInputError(f"a trimmed stage keeps 2..{self.codebook_size} codes, got {last_codes}")
        last = None if last_codes == self.codebook_size else last_codes
        return StreamLayout(self._check_n_q(n_q), envelope, self.pitch_rows, rows, last)

    def code_sizes(
        self, n_q: int | None = None, envelope: int | None = 0, last_codes: int | None = None
    ) -> tuple[int, ...]:
        """Alphabet size of each row of `encode(wav, n_q, envelope, last_codes)`'s codes: the pitch row (128), the
        band gains of envelope tier `envelope` (its `levels`), then n_q stages of K (the last: `last_codes`)."""
        lay = self.layout(n_q, envelope, last_codes)
        side = () if lay.envelope is None else self.envelopes[lay.envelope].cfg.row_sizes
        stages = (self.codebook_size,) * (lay.n_q - 1) + (lay.last_codes or self.codebook_size,)
        return (PITCH_SYMBOLS,) * lay.pitch_rows + side + stages

    def side_rows(self, envelope: int | None = 0) -> int:
        """Code rows before the RVQ stages: the pitch row, then the band gains of envelope tier `envelope`."""
        return self.layout(1, envelope).side_rows

    def table_sizes(self) -> tuple[int, ...]:
        """Alphabet sizes of the rows of the model's code-frequency tables: the pitch row, every envelope
        tier's band gains in tier order, then all n_q stages."""
        return (PITCH_SYMBOLS,) * self.pitch_rows + self.context_sizes() + (self.codebook_size,) * self.n_q

    def context_sizes(self) -> tuple[int, ...]:
        """Alphabet sizes of the rows the model's context tables cover: every envelope tier's rows, in
        `table_sizes` order (`bitstream/entropy.py`, context rows). The tables are stored flat: row r's
        `[k, k]` counts one after the other (`unpack_context`)."""
        return tuple(size for t in self.envelopes for size in t.cfg.row_sizes)

    def table_rows(self, layout: StreamLayout) -> list[int]:
        """Indices into `table_sizes()`'s rows of the rows `layout` carries, in stream order."""
        starts = self._tier_starts
        start = starts[layout.envelope or 0]
        return [
            *range(self.pitch_rows),
            *range(start, start + layout.envelope_rows),
            *range(starts[-1], starts[-1] + layout.n_q),
        ]

    @functools.cached_property
    def _tier_starts(self) -> list[int]:
        """`table_rows`' first row of each envelope tier, then of the stages (plans ask hundreds of times)."""
        p = self.pitch_rows
        return [p + sum(t.cfg.rows for t in self.envelopes[:i]) for i in range(len(self.envelopes) + 1)]

    def bitrate(self, layout: StreamLayout | None = None) -> float:
        """kbps per audio channel of a plainly packed stream with `layout` (default: every stage and row):
        frame_rate x the whole bits per frame that packing spends on each code row, ceil(log2(alphabet size)).
        The one rate rule: `CodecModel.bitrate` uses it for plain streams and adds entropy-coded rates from
        its tables."""
        layout = self.layout() if layout is None else layout
        bits = sum(math.ceil(math.log2(k)) for k in self.code_sizes(layout.n_q, layout.envelope, layout.last_codes))
        return self.frame_rate * bits / 1000.0

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def _check_n_q(self, n_q: int | None) -> int:
        n_q = self.n_q if n_q is None else int(n_q)
        if not 1 <= n_q <= self.n_q:
            raise CodecInputError(f"n_q must be in [1, {self.n_q}], got {n_q}")
        return n_q

    # -- shapes --------------------------------------------------------------------------------------
    def _fold(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() != 3 or wav.shape[1] != self.channels:
            raise CodecInputError(f"expected audio [batch, {self.channels}, time], got shape {tuple(wav.shape)}")
        x = wav.reshape(-1, 1, wav.shape[-1])
        if not self._is_streaming:
            # Streaming chunks are not padded: the convs buffer incomplete frames themselves.
            x = F.pad(x, (0, (-x.shape[-1]) % self.hop_length))
        return x

    def embed(self, wav: torch.Tensor) -> torch.Tensor:
        """Unquantized latent: wav `[batch, channels, time]` -> `[batch * channels, latent_dim, frames]`."""
        return self.encoder(self._fold(wav))

    # -- training ------------------------------------------------------------------------------------
    def forward(self, wav: torch.Tensor, n_q: int | None = None, lock: bool = False) -> CodecOutput:
        """Training forward. wav `[batch, channels, time]` -> `CodecOutput` with audio of the same shape
        (input zero-padded to a multiple of hop, output trimmed back); quantizer dropout applies in training.
        lock: the harmonic source's phase follows the input's as the first envelope tier with phase rows
        sends it (`phase_lock`), so the decoder trains on what those tiers decode."""
        x = self._fold(wav)
        z = self.encoder(x)
        batch, length = wav.shape[0], wav.shape[-1]
        q = self.quantizer(z, n_q=self._check_n_q(n_q))
        f0 = amps = phases = None
        harmonics, levels = self.phase_lock if lock else (0, 0)
        if self.harmonic is not None and self.pitch_tracker is not None:
            pitch = self.pitch_tracker(x[:, 0])
            amps = self.harmonic.amplitudes(q.quantized)
            phases = self._lock(x[:, 0], pitch, harmonics, levels)
            source = self.harmonic.source(q.quantized, pitch, amps, phases, levels)
            audio = self._decode_with(q.quantized, source)
            audio = self.harmonic.mix(q.quantized, source, audio)
            f0 = symbols_to_f0(pitch)
        else:
            audio = self.decoder(q.quantized)
        audio = audio[..., :length].reshape(batch, self.channels, -1)
        codes = q.codes.reshape(batch, self.channels, q.codes.shape[1], -1)
        return CodecOutput(audio, codes, q.loss, q.stats, z, f0, amps, harmonics if phases is not None else 0)

    @property
    def phase_lock(self) -> tuple[int, int]:
        """(harmonics, levels) of the first envelope tier that sends phase rows; (0, 0) if none does."""
        tiers = [t for t in self.config.envelopes if t.phase_harmonics]
        return (tiers[0].phase_harmonics, tiers[0].phase_levels) if tiers else (0, 0)

    def correct_levels(self, wav: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Training: this codec's output `audio` for `wav` (both `[batch, channels, time]`) with the envelope
        rows' gains applied, as `encode` would measure and `decode` apply them; differentiable in `audio`
        (the gains are constants). Without an envelope, `audio` as it is."""
        if self.envelope is None:
            return audio
        length = audio.shape[-1]
        x, y = self._fold(wav)[:, 0], self._fold(audio)[:, 0]
        y = self.envelope(y, self.envelope.analyse(x, y.detach()))
        return y[..., :length].reshape(audio.shape)

    # -- inference -----------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(
        self, wav: torch.Tensor, n_q: int | None = None, envelope: int | None = 0, last_codes: int | None = None
    ) -> torch.Tensor:
        """wav `[batch, channels, time]` -> codes `[batch, channels, rows, ceil(time / hop)]` int64, rows as
        `layout(n_q, envelope)`: the pitch symbols first (models with `pitch`), the band-energy corrections of
        envelope tier `envelope` (None: none; the encoder decodes its own codes to measure them), then the
        RVQ stages (the last trimmed to its first `last_codes` codes, if given). Streamed encodes and decodes
        each need their own `streaming()` block: both use the decoder's state."""
        lay = self.layout(n_q, envelope, last_codes)
        n_q = lay.n_q
        batch = wav.shape[0]
        x = self._fold(wav)
        with parametrize.cached():  # weight norm computed once per call, not per layer use
            z = self.encoder(x)
        if z.shape[-1] == 0:
            codes = torch.zeros(z.shape[0], n_q, 0, dtype=torch.long, device=z.device)
        else:
            codes = self.quantizer.encode(z, n_q, lay.last_codes)
        if self.pitch_tracker is not None:
            symbols = self.pitch_tracker(x[:, 0])
            if self._is_streaming:  # with lookahead the tracker runs a frame behind: hold the stages back
                held = self._state("held_codes", codes.shape[0])
                codes = codes if held is None else torch.cat([held, codes], dim=-1)
                self._streaming_state["held_codes"] = codes[..., symbols.shape[-1] :]
                codes = codes[..., : symbols.shape[-1]]
            codes = torch.cat([symbols.unsqueeze(1), codes], dim=1)
        if lay.envelope is not None:
            codes = self._with_envelope(x[:, 0], codes, lay.envelope)
        return codes.reshape(batch, self.channels, codes.shape[1], -1)

    def _with_envelope(
        self,
        x: torch.Tensor,
        codes: torch.Tensor,
        tier: int,
        locks: dict[tuple[int, int], torch.Tensor] | None = None,
        decode: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Insert envelope tier `tier`'s rows after the pitch row: x `[batch, time]` the input (in streaming,
        the new samples), codes `[batch, pitch + n_q rows, frames]` for the frames this call emits. A whole-file
        caller that has them passes the phase rows by (harmonics, levels) (`locks`, from `_lock`) and the
        uncorrected decode of these codes with the tier's phase rows (`decode` `[batch, frames * hop]`)."""
        frames, cfg = codes.shape[-1], self.envelopes[tier].cfg
        kind, phases = (cfg.phase_harmonics, cfg.phase_levels), None
        if cfg.phase_harmonics and self.harmonic is not None:
            phases = locks[kind] if locks and kind in locks else self._lock(x, codes[:, 0], *kind)
        if decode is not None:
            y = decode
        else:
            y = self._synthesise(codes, phases, cfg.phase_levels)[:, 0] if frames else x.new_zeros(x.shape[0], 0)
        symbols = self.envelopes[tier].analyse(x, y)
        p = self.pitch_rows
        side = [symbols] if phases is None else [symbols, phases]
        return torch.cat([codes[:, :p], *side, codes[:, p:]], dim=1)

    def _synthesise(
        self, codes: torch.Tensor, phases: torch.Tensor | None = None, phase_levels: int = 16
    ) -> torch.Tensor:
        """Codes `[batch, pitch + n_q rows, frames]` (no envelope rows) and a tier's phase rows, if any ->
        uncorrected decode `[batch, 1, frames * hop]`."""
        p = self.pitch_rows
        with parametrize.cached():
            z = self.quantizer.decode(codes[:, p:])
            return self.synthesise(z, codes[:, 0] if p else None, phases, phase_levels)

    def synthesise_variants(
        self, codes: torch.Tensor, variants: dict[object, tuple[torch.Tensor | None, int]]
    ) -> dict[object, torch.Tensor]:
        """`_synthesise(codes, phases, levels)` `[batch, 1, frames * hop]` for every (phases, levels) in `variants`
        (phases None: free-running), by key. Where the SEANet decoder does not read the harmonic source, its
        output is the same for every variant: it runs once and only the source is made again, with the same
        operations as separate calls (the same values)."""
        if self.harmonic is None or self.config.decoder_source:
            return {key: self._synthesise(codes, ph, lv) for key, (ph, lv) in variants.items()}
        p = self.pitch_rows
        with parametrize.cached():
            z = self.quantizer.decode(codes[:, p:])
            pitch = codes[:, 0]
            residual = self.decoder(z)
            return {
                key: self.harmonic.mix(z, self.harmonic.source(z, pitch, phases=ph, phase_levels=lv), residual)
                for key, (ph, lv) in variants.items()
            }

    def synthesise(
        self,
        z: torch.Tensor,
        pitch: torch.Tensor | None = None,
        phases: torch.Tensor | None = None,
        phase_levels: int = 16,
    ) -> torch.Tensor:
        """Latent `[batch, latent_dim, frames]` (quantized, or the continuous one for eval's ceiling) and, for
        models with pitch, the pitch symbols `[batch, frames]` and optional phase rows `[batch, harmonics,
        frames]` -> uncorrected decode `[batch, 1, frames * hop]`."""
        if self.harmonic is None:
            return self.decoder(z)
        source = self.harmonic.source(z, pitch, phases=phases, phase_levels=phase_levels)
        return self.harmonic.mix(z, source, self._decode_with(z, source))

    def _decode_with(self, z: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """The SEANet decode of z, reading the harmonic `source` when `decoder_source` asks for it."""
        return self.decoder(z, source if self.config.decoder_source else None)

    @torch.no_grad()
    def table_codes(self, wav: torch.Tensor, gains_n_q: int | None = None) -> list[torch.Tensor]:
        """wav `[batch, channels, time]` (whole file, not streaming) -> the codes of every row of the model's
        tables (`table_sizes`), each `[batch * channels, frames]`: the pitch row, every envelope tier's band
        gains (measured on the decode of `gains_n_q` stages, default all, as a stream with that many stages
        sends them), all stages. For code tables and per-file rate planning."""
        return self.table_codes_at(wav, [self.n_q if gains_n_q is None else gains_n_q])[0]

    def table_codes_at(self, wav: torch.Tensor, gains_n_qs: list[int]) -> list[list[torch.Tensor]]:
        """`table_codes` for several stage counts of the band gains, encoding once: one list of rows per count."""
        codes = self.encode(wav, self.n_q, None).flatten(0, 1)  # [batch * channels, pitch + n_q, frames]
        p = self.pitch_rows
        head = [codes[:, k] for k in range(p)]
        stages = [codes[:, k] for k in range(p, codes.shape[1])]
        if not len(self.envelopes):
            return [head + stages for _ in gains_n_qs]
        x = self._fold(wav)[:, 0]
        # A tier's phase rows depend on the input and the pitch row only; its band gains are measured on the
        # decode that uses them. Tiers that send the same phase rows share their measurement and their decode.
        kinds = {(t.cfg.phase_harmonics, t.cfg.phase_levels) for t in self.envelopes if t.cfg.phase_harmonics}
        locks = {k: self._lock(x, codes[:, 0], k[0], k[1]) for k in kinds}
        out = []
        for n in gains_n_qs:
            sent = codes[:, : p + self._check_n_q(n)]  # a stage's codes do not depend on later stages
            variants = {None: (None, 16), **{k: (locks[k], k[1]) for k in kinds}}
            decodes = {k: y[:, 0] for k, y in self.synthesise_variants(sent, variants).items()}
            rows = []
            for tier in self.envelopes:
                kind = (tier.cfg.phase_harmonics, tier.cfg.phase_levels) if tier.cfg.phase_harmonics else None
                phases = None if kind is None else locks[kind]
                gains = tier.analyse(x, decodes[kind])
                rows += [gains[:, b] for b in range(gains.shape[1])]
                rows += [] if phases is None else [phases[:, k] for k in range(phases.shape[1])]
            out.append(head + rows + stages)
        return out

    def _lock(self, x: torch.Tensor, pitch: torch.Tensor, harmonics: int, levels: int) -> torch.Tensor | None:
        """Phase rows `[batch, harmonics, frames]` in `levels` steps for input x `[batch, time]` and pitch
        symbols `[batch, frames]`, or None when there are none to send."""
        if not harmonics or self.harmonic is None:
            return None
        return self.harmonic.lock(x, pitch, harmonics, levels)

    @torch.no_grad()
    def encode_flush(self, envelope: int | None = 0) -> torch.Tensor | None:
        """End of a streamed encode: codes `[batch, channels, rows, frames]` of the frames held back for the
        pitch tracker's lookahead (it reads zeros past the end, as the whole-file pass pads), or None."""
        held = self._streaming_state.get("held_codes") if self._is_streaming else None
        if self.pitch_tracker is None or held is None or held.shape[-1] == 0:
            return None
        symbols = self.pitch_tracker.flush(held.shape[0]).to(held.device)
        codes = torch.cat([symbols.unsqueeze(1), held[..., : symbols.shape[-1]]], dim=1)
        self._streaming_state["held_codes"] = held[..., symbols.shape[-1] :]
        tier = self.layout(1, envelope).envelope
        if tier is not None:
            codes = self._with_envelope(held.new_zeros(held.shape[0], 0, dtype=torch.float32), codes, tier)
        return codes.reshape(-1, self.channels, codes.shape[1], codes.shape[-1])

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, envelope: int | None = 0) -> torch.Tensor:
        """codes `[batch, channels, rows, frames]` (as `encode(..., envelope)` gives them) -> wav `[batch,
        channels, frames * hop]`. Streaming with envelope rows, the output runs one frame behind;
        `decode_flush` ends it."""
        if codes.dim() != 4 or codes.shape[1] != self.channels:
            raise CodecInputError(
                f"expected codes [batch, {self.channels}, rows, frames], got shape {tuple(codes.shape)}"
            )
        batch, _, rows, frames = codes.shape
        side = self.side_rows(envelope)
        n_q = rows - side
        if not 1 <= n_q <= self.n_q:
            raise CodecInputError(f"expected {side + 1}..{side + self.n_q} code rows, got {rows}")
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise CodecInputError(f"codes must be integers, got {codes.dtype}")
        flat = codes.reshape(batch * self.channels, rows, frames).long()
        if frames == 0:
            return codes.new_zeros(batch, self.channels, 0, dtype=torch.float32)
        alphabet = self.code_sizes(n_q, envelope)
        sizes = torch.tensor(alphabet, device=codes.device)[None, :, None]
        if bool((flat < 0).any()) or bool((flat >= sizes).any()):
            raise CodecInputError(f"codes out of range: row alphabet sizes are {alphabet}")
        p = self.pitch_rows
        tier = self.layout(n_q, envelope).envelope
        stream = torch.cat([flat[:, :p], flat[:, side:]], dim=1)
        if tier is None:
            return self._synthesise(stream).reshape(batch, self.channels, -1)
        cfg = self.envelopes[tier].cfg
        phases = flat[:, p + cfg.envelope_rows : side] if cfg.phase_harmonics else None
        wav = self._synthesise(stream, phases, cfg.phase_levels)
        wav = self.envelopes[tier](wav[:, 0], flat[:, p : p + cfg.envelope_rows]).unsqueeze(1)
        return wav.reshape(batch, self.channels, -1)

    @torch.no_grad()
    def decode_flush(self) -> torch.Tensor | None:
        """End of a streamed decode: the last frame's audio `[batch, channels, hop]` held back by the envelope's
        overlap-add, or None (no envelope, or nothing decoded)."""
        tails = [t for t in (tier.flush() for tier in self.envelopes) if t is not None]  # the tier that decoded
        tail = tails[0] if tails else None
        return None if tail is None else tail.reshape(-1, self.channels, tail.shape[-1])
