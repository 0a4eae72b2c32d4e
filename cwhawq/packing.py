"""Bit-packing of integer weight codes: a b-bit channel's codes stored in exactly b bits each.

`cwhawq.quantizer.integer_codes` gives the codes in int8/int16 containers; a b-bit code lies in
[-(2**(b-1) - 1), 2**(b-1) - 1]. Packing offsets it to [0, 2**b - 2] and writes its b bits, least significant
first, one after the other (`numpy.packbits`, little bit order), so n codes take ceil(n * b / 8) bytes: the size
that `cwhawq.cost` reports, up to the last byte's padding.
"""

from __future__ import annotations

import numpy as np

#: Widths that can be packed: the candidate bit-widths cwhawq accepts.
PACKED_BITS = range(2, 17)
#: Codes packed or unpacked at a time (a multiple of 8), which bounds the memory a large layer needs.
CHUNK = 1 << 20


def _offset(bits: int) -> int:
    if bits not in PACKED_BITS:
        raise ValueError(f"cannot pack {bits}-bit codes; widths {PACKED_BITS.start} to {PACKED_BITS.stop - 1} can")
    return 2 ** (bits - 1) - 1


def packed_size(count: int, bits: int) -> int:
    """Bytes that `pack_codes` uses for `count` codes of `bits` bits."""
    return -(-count * bits // 8)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """The codes (any integer array, read in C order) packed into a uint8 array of `packed_size` bytes."""
    shifted = np.asarray(codes, dtype=np.int64).ravel() + _offset(bits)
    if shifted.size and (shifted.min() < 0 or shifted.max() > 2 * _offset(bits)):
        raise ValueError(f"codes outside the symmetric {bits}-bit range [{-_offset(bits)}, {_offset(bits)}]")
    shifted = shifted.astype(np.uint16)
    places = np.arange(bits, dtype=np.uint16)
    # a chunk of CHUNK codes (a multiple of 8) fills whole bytes, so chunks pack independently, in bounded memory
    chunks = [
        np.packbits(((shifted[start : start + CHUNK, None] >> places) & 1).astype(np.uint8).ravel(), bitorder="little")
        for start in range(0, shifted.size, CHUNK)
    ]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint8)


def unpack_codes(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The first `count` codes of `bits` bits from `pack_codes`'s output, as int32."""
    offset = _offset(bits)
    packed = np.asarray(packed, dtype=np.uint8)
    if packed.size != packed_size(count, bits):
        raise ValueError(f"{packed.size} bytes cannot hold exactly {count} codes of {bits} bits")
    weights = np.left_shift(1, np.arange(bits, dtype=np.int32))
    codes = np.empty(count, dtype=np.int32)
    for start in range(0, count, CHUNK):
        size = min(CHUNK, count - start)
        chunk = packed[start * bits // 8 : start * bits // 8 + packed_size(size, bits)]
        planes = np.unpackbits(chunk, count=size * bits, bitorder="little").reshape(size, bits)
        codes[start : start + size] = planes.astype(np.int32) @ weights - offset
    return codes
