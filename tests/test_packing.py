"""Dense N-bit packing: hand-worked bytes, a bit-by-bit reference, round trips."""


import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from tinycl.errors import TinyclError
from tinycl.numerics.packing import pack, pack_rows, packed_nbytes, row_nbytes, unpack, unpack_rows


def reference_pack(codes, bits):
    """Independent reference: write every bit of every code into a list, LSB first."""
    stream = []
    for c in codes:
        stream += [(int(c) >> k) & 1 for k in range(bits)]
    stream += [0] * (-len(stream) % 8)
    return [sum(stream[i + k] << k for k in range(8)) for i in range(0, len(stream), 8)]


def test_hand_worked_bytes():
    # 2-bit [1, 2, 3]: stream bits 1,0 | 0,1 | 1,1 -> 1 + 8 + 16 + 32 = 57
    assert pack(torch.tensor([1, 2, 3]), 2).tolist() == [57]
    # 3-bit [5, 3]: bits 1,0,1 | 1,1,0 -> 1 + 4 + 8 + 16 = 29
    assert pack(torch.tensor([5, 3]), 3).tolist() == [29]
    # 7-bit: eight codes of all ones are 56 ones = 7 bytes of 0xFF (7/8 byte per code)
    assert pack(torch.full((8,), 127), 7).tolist() == [255] * 7
    # 7-bit [0, 1]: second code starts at stream bit 7 -> byte0 = 128, byte1 = 0
    assert pack(torch.tensor([0, 1]), 7).tolist() == [128, 0]
    # 1-bit [1,0,0,0,0,0,0,1, 1] -> 0b10000001 = 129, then 1
    assert pack(torch.tensor([1, 0, 0, 0, 0, 0, 0, 1, 1]), 1).tolist() == [129, 1]
    # 4-bit [0xA, 0x5] -> low nibble first: 0x5A
    assert pack(torch.tensor([10, 5]), 4).tolist() == [0x5A]


def test_nbytes_exact():
    assert packed_nbytes(4096, 7) == 3584  # 4096 * 7 / 8
    assert packed_nbytes(3, 3) == 2        # 9 bits
    assert packed_nbytes(0, 5) == 0
    assert packed_nbytes(1, 1) == 1
    assert row_nbytes(13, 5) == 9          # 65 bits -> 9 bytes
    for bits in range(1, 9):
        assert pack(torch.zeros(1001, dtype=torch.int64), bits).numel() == -(-1001 * bits // 8)


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 8), data=st.data())
def test_matches_reference_and_round_trips(bits, data):
    count = data.draw(st.integers(0, 70))
    codes = data.draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=count, max_size=count))
    t = torch.tensor(codes, dtype=torch.int64)
    p = pack(t, bits)
    assert p.dtype == torch.uint8
    assert p.tolist() == reference_pack(codes, bits)
    assert unpack(p, bits, count).tolist() == codes
    # uint8 and int32 inputs and numpy arrays give the same stream
    assert torch.equal(pack(t.to(torch.uint8), bits), p)
    assert torch.equal(pack(np.array(codes, dtype=np.int32), bits), p)


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(1, 8), n=st.integers(0, 6), row_len=st.integers(0, 23), seed=st.integers(0, 99))
def test_rows_are_independent_byte_aligned_streams(bits, n, row_len, seed):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 1 << bits, (n, row_len), generator=g)
    rows = pack_rows(codes, bits)
    assert rows.shape == (n, -(-row_len * bits // 8))
    for r in range(n):
        assert rows[r].tolist() == reference_pack(codes[r].tolist(), bits)
    assert torch.equal(unpack_rows(rows, bits, row_len), codes)


def test_unpack_ignores_trailing_bytes_and_shapes():
    codes = torch.arange(10) % 8
    p = pack(codes.view(2, 5), 3)  # flattened in C order
    assert torch.equal(unpack(torch.cat([p, torch.full((3,), 255, dtype=torch.uint8)]), 3, 10), codes)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(TinyclError, match="bits"):
        pack(torch.tensor([1]), 9)
    with pytest.raises(TinyclError, match="bits"):
        pack(torch.tensor([1]), 0)
    with pytest.raises(TinyclError, match=r"\[0, 7\]"):
        pack(torch.tensor([8]), 3)
    with pytest.raises(TinyclError, match=r"\[0, 7\]"):
        pack(torch.tensor([-1]), 3)
    with pytest.raises(TinyclError, match="integer dtype"):
        pack(torch.tensor([1.0]), 3)
    with pytest.raises(TinyclError, match="need 2 bytes"):
        unpack(torch.zeros(1, dtype=torch.uint8), 3, 3)
    with pytest.raises(TinyclError, match="uint8"):
        unpack(torch.zeros(4, dtype=torch.int64), 3, 3)


@pytest.mark.parametrize("bits", [1, 3, 4, 7, 8])
def test_roundtrip_3000_latents_of_4096(bits):
    """A full-size memory round trip (its speed is measured in bench/packing_speed.py, not here)."""
    g = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 1 << bits, (3000, 4096), generator=g, dtype=torch.int64).to(torch.uint8)
    p = pack_rows(codes, bits)
    back = unpack_rows(p, bits, 4096)
    assert p.numel() == 3000 * 4096 * bits // 8
    assert torch.equal(back, codes.long())
