"""Speed of dense N-bit packing (``pack_rows`` / ``unpack_rows``) of a replay memory's rows.

Packs and unpacks ``rows`` x ``row_len`` random codes at each bit width and reports the
median time of ``repeats`` rounds, and its ratio to a peer measured in the same run on the
same codes: a plain copy of the uint8 codes (``Tensor.clone``, the memory-bound floor), and
for 1 bit NumPy's ``packbits`` / ``unpackbits`` (the same job done by a library). This was
a wall-clock assertion in tests/test_packing.py (under 1 s for 3000 x 4096); timings live here.

    .venv/bin/python bench/packing_speed.py                       # 3000 x 4096, bits 1 3 4 7 8
    .venv/bin/python bench/packing_speed.py --rows 1500 --bits 2 4 --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from tinycl.numerics.packing import pack_rows, unpack_rows
from tinycl.report import jsonout


def _median_s(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(bits: int, rows: int, row_len: int, repeats: int) -> dict:
    """Median seconds of pack, unpack and the peers at one bit width, and the ratios."""
    g = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 1 << bits, (rows, row_len), generator=g, dtype=torch.int64).to(torch.uint8)
    packed = pack_rows(codes, bits)
    if not torch.equal(unpack_rows(packed, bits, row_len), codes.long()):
        raise SystemExit(f"round trip failed at {bits} bits")
    r = {"bits": bits, "rows": rows, "row_len": row_len, "repeats": repeats,
         "pack_s": _median_s(lambda: pack_rows(codes, bits), repeats),
         "unpack_s": _median_s(lambda: unpack_rows(packed, bits, row_len), repeats),
         "copy_s": _median_s(codes.clone, repeats)}
    r["pack_over_copy"] = r["pack_s"] / r["copy_s"]
    r["unpack_over_copy"] = r["unpack_s"] / r["copy_s"]
    if bits == 1:
        a = codes.numpy()
        p = np.packbits(a, axis=1, bitorder="little")
        r["numpy_pack_s"] = _median_s(lambda: np.packbits(a, axis=1, bitorder="little"), repeats)
        r["numpy_unpack_s"] = _median_s(lambda: np.unpackbits(p, axis=1, count=row_len, bitorder="little"),
                                        repeats)
        r["pack_over_numpy"] = r["pack_s"] / r["numpy_pack_s"]
        r["unpack_over_numpy"] = r["unpack_s"] / r["numpy_unpack_s"]
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--row-len", type=int, default=4096)
    ap.add_argument("--bits", type=int, nargs="*", default=[1, 3, 4, 7, 8])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="write the rows as JSON to this file")
    args = ap.parse_args()
    if min(args.rows, args.row_len, args.repeats, args.threads) < 1 or any(not 1 <= b <= 8 for b in args.bits):
        ap.error("--rows, --row-len, --repeats, --threads must be >= 1 and --bits in 1..8")
    torch.set_num_threads(args.threads)
    rows = [measure(b, args.rows, args.row_len, args.repeats) for b in args.bits]
    for r in rows:
        line = (f"{r['bits']} bits, {r['rows']} x {r['row_len']}: pack {1e3 * r['pack_s']:.1f} ms "
                f"({r['pack_over_copy']:.1f} x copy), unpack {1e3 * r['unpack_s']:.1f} ms "
                f"({r['unpack_over_copy']:.1f} x copy); copy {1e3 * r['copy_s']:.2f} ms")
        if "numpy_pack_s" in r:
            line += (f"; numpy packbits {1e3 * r['numpy_pack_s']:.1f} ms (tinycl {r['pack_over_numpy']:.2f} x), "
                     f"unpackbits {1e3 * r['numpy_unpack_s']:.1f} ms (tinycl {r['unpack_over_numpy']:.2f} x)")
        print(line)
    if args.json:
        jsonout.write(args.json, {"threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
