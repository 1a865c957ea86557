"""Build (or finish building) a preset's labelled test set and random pool.

    .venv/bin/python -m bench._build_data [--preset full] [--which test pool] [--limit N]
"""

from __future__ import annotations

import argparse
import time

from bench._learning_data import labelled_set


def main(argv: list[str] | None = None) -> None:
    from bench.data_efficiency import PRESETS, with_reference

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="full")
    parser.add_argument("--which", nargs="+", default=["test", "pool"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, help="label only the first N frames of each set")
    args = parser.parse_args(argv)
    spec = with_reference(PRESETS[args.preset]).data
    for which in args.which:
        start = time.perf_counter()
        frames = labelled_set(spec, which, workers=args.workers, limit=args.limit,
                              progress=lambda i, n: print(f"{which}: {i}/{n} labels, "
                                                          f"{time.perf_counter() - start:.0f} s", flush=True))
        print(f"{which}: {len(frames)} labelled frames in {spec.folder}", flush=True)


if __name__ == "__main__":
    main()
