#!/usr/bin/env python
"""Split attention's weighted radix sum on channels_last inputs: NCHW-view vs NHWC reduction.

Both compute ``out[b, c] = sum_r a[b, r, c] * x[b, r*C + c]`` for a channels_last ``x`` and are
checked for equality first; the table prints median milliseconds and the speed-up.

    python benchmarks/bench_split_attention.py [--threads 2]
"""

import argparse
import time

import torch

SHAPES = [(8, 2, 64, 56), (8, 2, 128, 28), (8, 2, 256, 14), (1, 2, 128, 100), (8, 4, 80, 56)]


def nchw_view(x, a, radix):
    b, rc, h, w = x.shape
    return (x.view(b, radix, rc // radix, h, w) * a).sum(dim=1)


def nhwc(x, a, radix):
    b, rc, h, w = x.shape
    splits = x.permute(0, 2, 3, 1).view(b, h, w, radix, rc // radix)
    return (splits * a.view(b, 1, 1, radix, -1)).sum(dim=3).permute(0, 3, 1, 2)


def median_ms(fn, n: int = 15) -> float:
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * sorted(times)[n // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    torch.set_num_threads(parser.parse_args().threads)
    print("| B, radix, C, HxW | NCHW view ms | NHWC ms | speed-up |")
    print("|---|---|---|---|")
    for b, r, c, h in SHAPES:
        x = torch.randn(b, r * c, h, h).contiguous(memory_format=torch.channels_last)
        a = torch.rand(b, r, c, 1, 1)
        torch.testing.assert_close(nhwc(x, a, r), nchw_view(x, a, r))
        t_old = median_ms(lambda: nchw_view(x, a, r))
        t_new = median_ms(lambda: nhwc(x, a, r))
        print(f"| {b}, {r}, {c}, {h}x{h} | {t_old:.2f} | {t_new:.2f} | {t_old / t_new:.1f}x |")


if __name__ == "__main__":
    main()
