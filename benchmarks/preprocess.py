"""Seconds to prepare one photo-sized image (``prepare_digit``) and to label the components of a
1000 x 1000 mask (``label_components``), against SciPy's ``ndimage.label`` when it is installed.

    python benchmarks/preprocess.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import chainrule as cr
from chainrule.images import label_components, prepare_digit
from photo_like import photograph, render


def best_of(rounds: int, run) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    digit = cr.datasets.load_mnist(normalize=False)[1][0][0].reshape(28, 28)
    masks = {"noise, 30 % on": rng.random((1000, 1000)) < 0.3}
    spiral = np.zeros((1000, 1000), bool)  # one component winding 125 times
    for k in range(0, 500, 4):
        spiral[k, k : 1000 - k] = spiral[k : 1000 - k, 999 - k] = True
        spiral[999 - k, k + 2 : 1000 - k] = spiral[k + 2 : 1000 - k, k + 2] = True
    masks["spiral"] = spiral
    try:
        from scipy import ndimage
    except ImportError:  # pragma: no cover - an optional extra
        ndimage = None
    for name, mask in masks.items():
        ours = best_of(args.rounds, lambda m=mask: label_components(m))
        line = f"label_components 1000x1000 {name}: {ours * 1e3:.1f} ms"
        if ndimage is not None:
            theirs = best_of(args.rounds, lambda m=mask: ndimage.label(m, np.ones((3, 3))))
            line += f"; scipy.ndimage.label {theirs * 1e3:.1f} ms (x{ours / theirs:.1f})"
        print(line)
    for side in (560, 1000, 3000):
        photo = photograph(render(digit, side // 2, 5, (side, side), (side // 4, side // 4)), rng)
        seconds = best_of(args.rounds, lambda p=photo: prepare_digit(p))
        print(f"prepare_digit {side}x{side} photo: {seconds * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
