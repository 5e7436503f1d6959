# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
"""PortableRNG's stream computed in 16-bit limbs: exact under any integer arithmetic, for traced graphs.

SplitMix64 is defined modulo 2**64, which uint64 arithmetic gives by wrapping.
A traced graph (``torch.compile``) has only int64, and a compiler may evaluate
integer expressions exactly instead of wrapping them (inductor does so for
index arithmetic, where ``arange`` lives): a 64-bit product then overflows, or
becomes another number. Here each 64-bit value is four 16-bit limbs held in
int64 arrays, and no intermediate value reaches 2**36, so wrapping and exact
arithmetic agree and the values are the host stream's bit for bit. Written with
the array API's operators and ``arange`` only.
"""

from __future__ import annotations

from typing import Any

from ._portable import SPLITMIX64, UNIFORM_BITS

__all__ = ["limbs_of", "stream_uniform_ints"]

_BITS = 16
_MASK = (1 << _BITS) - 1
_LIMBS = 64 // _BITS


def limbs_of(value: int) -> list[int]:
    """The four 16-bit limbs of a 64-bit int, least significant first."""
    return [(value >> (_BITS * i)) & _MASK for i in range(_LIMBS)]


def _carry(sums: list[Any]) -> list[Any]:
    """Limbs from per-limb sums below 2**35, modulo 2**64 (the last carry is dropped)."""
    limbs: list[Any] = []
    carry: Any = 0
    for limb_sum in sums:
        total = limb_sum + carry
        limbs.append(total & _MASK)
        carry = total >> _BITS
    return limbs


def _times_plus(z: list[Any], factor: int, addend: int = 0) -> list[Any]:
    """``z * factor + addend`` modulo 2**64, for constant ``factor`` and ``addend``."""
    c, s = limbs_of(factor), limbs_of(addend)
    sums: list[Any] = []
    for i in range(_LIMBS):
        # At most four products of 16-bit limbs: below 2**34.
        total: Any = s[i]
        for j in range(i + 1):
            total = total + z[j] * c[i - j]
        sums.append(total)
    return _carry(sums)


def _shifted(z: list[Any], bits: int) -> list[Any]:
    """The limbs of ``z >> bits`` (a logical shift of the 64-bit value), ``bits`` not a multiple of 16."""
    whole, part = divmod(bits, _BITS)
    out: list[Any] = []
    for i in range(_LIMBS):
        low = z[i + whole] if i + whole < _LIMBS else 0
        high = z[i + whole + 1] if i + whole + 1 < _LIMBS else 0
        out.append((low >> part) | ((high << (_BITS - part)) & _MASK))
    return out


def _xor_shift(z: list[Any], bits: int) -> list[Any]:
    """``z ^ (z >> bits)``, limb by limb."""
    return [a ^ b for a, b in zip(z, _shifted(z, bits), strict=True)]


def stream_uniform_ints(xp: Any, state: int, first: Any, n: Any, device: Any) -> Any:
    """Values ``first .. first + n - 1`` of the stream from ``state``, as 53-bit ints ``k`` (u = k * 2**-53).

    ``first`` is a position (an int, or a 0-d int64 array on ``device``) below
    2**62; the result is an int64 array of shape ``(n,)``.
    """
    gamma, mix_1, mix_2 = SPLITMIX64
    # Value k of the stream is mix64(state + (k + 1) * gamma mod 2**64); k + 1 < 2**63.
    count = xp.arange(n, dtype=xp.int64, device=device) + (first + 1)
    z = _times_plus([(count >> (_BITS * i)) & _MASK for i in range(_LIMBS)], gamma, state)
    z = _times_plus(_xor_shift(z, 30), mix_1)
    z = _times_plus(_xor_shift(z, 27), mix_2)
    z = _shifted(_xor_shift(z, 31), 64 - UNIFORM_BITS)
    # The top limb now holds 5 bits: the sum is below 2**53.
    return z[0] + (z[1] << _BITS) + (z[2] << (2 * _BITS)) + (z[3] << (3 * _BITS))
