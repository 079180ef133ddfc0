"""PCG32: the small random generator shared by the Python reference and the generated C.

O'Neill's PCG-XSH-RR 64/32 (pcg-random.org, ``pcg32_random_r``): a 64-bit LCG state
``state = state * 6364136223846793005 + inc`` (mod 2^64, ``inc`` odd) and a 32-bit
output ``rotr32(((old >> 18) ^ old) >> 27, old >> 59)``. The whole state is two
integers (``state``, ``inc``) that a checkpoint stores as they are.

Seeding follows ``pcg32_srandom_r(initstate, initseq)``: ``inc = (initseq << 1) | 1``,
``state = 0``, one step, ``state += initstate``, one step.

:meth:`Pcg32.below` draws an integer uniform in ``[0, n)`` without modulo bias by
rejection (as ``pcg32_boundedrand_r``): ``threshold = 2^32 mod n``; draw ``r`` until
``r >= threshold``; return ``r mod n``. The C twin is ``export/c/tc_rng.c``; tests
check 10,000 draws equal.
"""

from __future__ import annotations

from tinycl.errors import TinyclError

MASK64 = (1 << 64) - 1
MULT = 6364136223846793005


class Pcg32:
    """PCG32 generator; ``state`` and ``inc`` are plain Python ints (64-bit unsigned)."""

    def __init__(self, seed: int = 0, seq: int = 0x54):
        self.inc = ((int(seq) << 1) | 1) & MASK64
        self.state = 0
        self.next_u32()
        self.state = (self.state + int(seed)) & MASK64
        self.next_u32()

    def next_u32(self) -> int:
        """The next 32-bit output (an int in [0, 2^32))."""
        old = self.state
        self.state = (old * MULT + self.inc) & MASK64
        xorshifted = (((old >> 18) ^ old) >> 27) & 0xFFFFFFFF
        rot = old >> 59
        return ((xorshifted >> rot) | (xorshifted << ((-rot) & 31))) & 0xFFFFFFFF

    def below(self, n: int) -> int:
        """An integer uniform in ``[0, n)``, ``1 <= n < 2^32``, without modulo bias."""
        n = int(n)
        if not 1 <= n < 1 << 32:
            raise TinyclError(f"rng: bound must be in 1..2^32-1, got {n}")
        threshold = (1 << 32) % n
        while True:
            r = self.next_u32()
            if r >= threshold:
                return r % n

    def state_dict(self) -> dict:
        return {"state": self.state, "inc": self.inc}

    def load_state_dict(self, sd: dict) -> None:
        state, inc = int(sd["state"]), int(sd["inc"])
        if not (0 <= state <= MASK64 and 0 <= inc <= MASK64 and inc & 1):
            raise TinyclError("rng: bad state (state and inc must be 64-bit, inc odd)")
        self.state, self.inc = state, inc
