"""CPU inference shortcuts compute what they replace: the ELU and the convolutions run as matrix products
match torch's kernels, a file of up to PROBE_SECONDS is coded from its probe's passes into the bytes that
coding it block by block gives, and entropy tables built once are shared by content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from conftest import vowel

from rotcodec.bitstream.format import _tables_for
from rotcodec.inference import load_model, read_rcq_header
from rotcodec.inference.model import CodecModel
from rotcodec.models.activations import ELU
from rotcodec.models.streaming import StreamingConv1d

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("inplace", [False, True])
def test_the_elu_shortcut_matches_torch(inplace: bool) -> None:
    torch.manual_seed(0)
    special = torch.tensor([0.0, -0.0, 1e-8, -1e-8, -1e-3, -30.0, -200.0, 50.0, float("inf"), float("-inf")])
    x = torch.cat([torch.randn(4000) * 4, special, torch.tensor([float("nan")])]).view(1, 1, -1)
    given = x.clone()
    with torch.no_grad():
        y = ELU(inplace=inplace)(given)
    torch.testing.assert_close(y, F.elu(x), rtol=1e-6, atol=1e-7, equal_nan=True)
    assert (y.data_ptr() == given.data_ptr()) == inplace  # in place exactly when asked
    if not inplace:
        torch.testing.assert_close(given, x, rtol=0, atol=0, equal_nan=True)
    leaf = x[..., :-1].clone().requires_grad_()
    ELU()(leaf).sum().backward()  # with autograd: torch's own kernel and gradient
    torch.testing.assert_close(leaf.grad, torch.where(leaf > 0, 1.0, torch.exp(leaf)).detach())


@pytest.mark.parametrize(("c_in", "c_out", "kernel"), [(1, 16, 7), (16, 1, 7), (16, 2, 3), (16, 32, 1), (1, 1, 1)])
@pytest.mark.parametrize("batch", [1, 3])
def test_convs_run_as_matrix_products_match_the_conv(c_in: int, c_out: int, kernel: int, batch: int) -> None:
    torch.manual_seed(c_in + c_out + kernel)
    conv = StreamingConv1d(c_in, c_out, kernel)
    x = torch.randn(batch, c_in, 777)
    with torch.no_grad():
        fast = conv(x)  # without autograd: the matrix-product path for these shapes
        slow = F.conv1d(F.pad(x, (kernel - 1, 0)), conv.conv.weight, conv.conv.bias)  # torch's conv
    assert fast.shape == slow.shape == (batch, c_out, 777)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    with torch.no_grad(), conv.streaming():  # chunked, through the streaming state, as whole
        chunks = torch.cat([conv(x[..., a : a + 100]) for a in range(0, 777, 100)], dim=-1)
    torch.testing.assert_close(chunks, slow, rtol=1e-5, atol=1e-5)


def test_a_short_file_is_coded_from_its_probe_into_the_bytes_of_block_coding(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model = load_model("speech16k")
    sr = model.sample_rate
    wav = vowel(sr, 4.0, seed=3)
    calls: list[int] = []
    stream = CodecModel.encode_stream
    monkeypatch.setattr(CodecModel, "encode_stream", lambda self, *a: calls.append(1) or stream(self, *a))
    for kbps in (3.0, 6.0, 12.0, 16.0):
        data = model.compress(wav, sr, kbps=kbps)
        assert calls == []  # priced whole: coded from the probe's passes
        layout = model.layout_of(read_rcq_header(data))
        assert model.compress(wav, sr, layout=layout) == data, kbps  # a given layout is coded block by block
        assert calls == [1]
        calls.clear()
    src = tmp_path / "in.wav"
    sf.write(src, wav, sr, subtype="FLOAT")
    model.compress_file(src, tmp_path / "x.rcq", kbps=6.0)
    assert calls == [] and (tmp_path / "x.rcq").read_bytes() == model.compress(wav, sr, kbps=6.0)
    long = vowel(sr, 12.0, seed=4)  # longer than the probe: coded block by block
    model.compress(long, sr, kbps=6.0)
    assert calls == [1]


def test_entropy_tables_are_built_once_per_content() -> None:
    model = load_model("speech16k")
    data = model.compress(vowel(model.sample_rate, 1.0, seed=5), model.sample_rate, kbps=6.0)
    header = read_rcq_header(data)
    layout = model.layout_of(header)
    freqs, context = model.tables(layout), model.context_tables(layout)
    first = _tables_for(header, freqs, context)
    assert _tables_for(header, freqs.copy(), None if context is None else context.copy()) is first
    other = freqs.copy()
    other[-1, 0] += 1  # another table: built anew, with another CRC
    assert _tables_for(header, other, context).crc != first.crc
    wav, _ = model.decompress(data)
    again, _ = model.decompress(data)
    assert np.array_equal(wav, again)
