"""Streaming: chunk-by-chunk encoding/decoding equals the whole-file pass."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rotcodec.models import Codec, CodecConfig, StreamingConv1d, StreamingConvTranspose1d, StreamingError
from rotcodec.quantize import RVQConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_codec(causal: bool = True, channels: int = 1, seed: int = 0, activation: str = "elu") -> Codec:
    torch.manual_seed(seed)
    q = RVQConfig(dim=8, n_q=4, codebook_size=16, kmeans_init=False)
    cfg = CodecConfig(
        sample_rate=8000,
        channels=channels,
        base_channels=4,
        strides=[2, 3, 4],
        latent_dim=8,
        causal=causal,
        activation=activation,
        quantizer=q,
    )
    return Codec(cfg).eval()


def split(x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    out, start = [], 0
    i = 0
    while start < x.shape[-1]:
        n = sizes[i % len(sizes)]
        out.append(x[..., start : start + n])
        start += n
        i += 1
    return out


@settings(max_examples=25, deadline=None)
@given(
    kernel=st.integers(1, 7),
    stride=st.integers(1, 4),
    dilation=st.integers(1, 3),
    sizes=st.lists(st.integers(1, 17), min_size=1, max_size=4),
)
def test_conv_chunks_of_any_length_match_whole(kernel: int, stride: int, dilation: int, sizes: list[int]) -> None:
    if (kernel - 1) * dilation + 1 < stride:
        kernel = stride
    torch.manual_seed(0)
    conv = StreamingConv1d(3, 5, kernel, stride=stride, dilation=dilation)
    x = torch.randn(2, 3, 12 * stride)
    with torch.no_grad():
        whole = conv(x)
        with conv.streaming():
            parts = torch.cat([conv(c) for c in split(x, sizes)], dim=-1)
    assert whole.shape[-1] == x.shape[-1] // stride
    assert parts.shape == whole.shape
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(stride=st.integers(1, 5), extra=st.integers(0, 5), sizes=st.lists(st.integers(1, 6), min_size=1, max_size=3))
def test_conv_transpose_overlap_add_matches_whole(stride: int, extra: int, sizes: list[int]) -> None:
    torch.manual_seed(1)
    conv = StreamingConvTranspose1d(3, 2, stride + extra, stride=stride)
    x = torch.randn(2, 3, 15)
    with torch.no_grad():
        whole = conv(x)
        with conv.streaming():
            parts = torch.cat([conv(c) for c in split(x, sizes)], dim=-1)
    assert whole.shape[-1] == 15 * stride
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(stride=st.integers(1, 8), extra=st.integers(0, 9), frames=st.integers(1, 20), causal=st.booleans())
def test_transposed_conv_without_autograd_equals_torchs(stride: int, extra: int, frames: int, causal: bool) -> None:
    """Inference runs the transposed conv as one polyphase conv: the same output as torch's transposed conv
    (which training uses), whole and in chunks."""
    torch.manual_seed(stride * 100 + extra)
    conv = StreamingConvTranspose1d(3, 2, stride + extra, stride=stride, causal=causal)
    x = torch.randn(2, 3, frames)
    reference = conv(x).detach()  # with autograd: torch's transposed conv
    with torch.no_grad():
        torch.testing.assert_close(conv(x), reference, rtol=1e-5, atol=1e-6)
        if causal:
            with conv.streaming():
                parts = torch.cat([conv(c) for c in split(x, [1, 2, 3])], dim=-1)
            torch.testing.assert_close(parts, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("chunk_frames", "activation"), [(1, "elu"), (2, "elu"), (5, "snake"), (13, "elu")])
def test_chunked_encode_equals_whole(chunk_frames: int, activation: str) -> None:
    codec = tiny_codec(activation=activation)
    hop = codec.hop_length
    torch.manual_seed(3)
    wav = torch.randn(2, 1, 40 * hop)
    whole_codes = codec.encode(wav)
    with torch.no_grad():
        whole_latent = codec.encoder(wav)
    chunk = chunk_frames * hop
    with codec.streaming():
        codes = torch.cat([codec.encode(c) for c in split(wav, [chunk])], dim=-1)
    with codec.streaming(), torch.no_grad():
        latent = torch.cat([codec.encoder(c) for c in split(wav, [chunk])], dim=-1)
    assert codes.shape == whole_codes.shape == (2, 1, 4, 40)
    assert torch.equal(codes, whole_codes)
    torch.testing.assert_close(latent, whole_latent, rtol=1e-5, atol=1e-6)


def test_chunks_not_multiple_of_hop_still_give_the_same_codes() -> None:
    codec = tiny_codec(seed=4)
    torch.manual_seed(4)
    wav = torch.randn(1, 1, 30 * codec.hop_length)
    whole = codec.encode(wav)
    with codec.streaming():
        codes = torch.cat([codec.encode(c) for c in split(wav, [7, 50, 13, 100])], dim=-1)
    assert torch.equal(codes, whole)


@pytest.mark.parametrize(("chunk_frames", "activation"), [(1, "elu"), (3, "snake"), (8, "elu")])
def test_chunked_decode_equals_whole(chunk_frames: int, activation: str) -> None:
    codec = tiny_codec(seed=5, activation=activation)
    torch.manual_seed(5)
    codes = torch.randint(0, codec.codebook_size, (2, 1, 4, 24))
    whole = codec.decode(codes)
    with codec.streaming():
        audio = torch.cat([codec.decode(c) for c in split(codes, [chunk_frames])], dim=-1)
    assert audio.shape == whole.shape == (2, 1, 24 * codec.hop_length)
    torch.testing.assert_close(audio, whole, rtol=1e-5, atol=1e-5)


def test_stereo_streaming_and_state_reset() -> None:
    codec = tiny_codec(channels=2, seed=6)
    wav = torch.randn(1, 2, 20 * codec.hop_length)
    whole = codec.encode(wav)
    for _ in range(2):  # a second stream must not see the first one's state
        with codec.streaming():
            codes = torch.cat([codec.encode(c) for c in split(wav, [3 * codec.hop_length])], dim=-1)
        assert torch.equal(codes, whole)
    with codec.streaming():
        codec.encode(wav[..., : codec.hop_length * 2])
        codec.reset_streaming()
        assert torch.equal(codec.encode(wav), whole)


def test_streaming_misuse_raises() -> None:
    with pytest.raises(StreamingError, match="non-causal"):
        with tiny_codec(causal=False).streaming():
            pass
    codec = tiny_codec()
    with codec.streaming():
        with pytest.raises(StreamingError, match="already"):
            with codec.streaming():
                pass
        codec.encode(torch.randn(2, 1, codec.hop_length))
        with pytest.raises(StreamingError, match="batch size"):
            codec.encode(torch.randn(3, 1, codec.hop_length))
    assert not codec.encoder.is_streaming
