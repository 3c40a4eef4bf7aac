"""``python -m bench``: run the suite and print one table of ratios (see bench/RESULTS.md).

    python -m bench                      # the whole suite on this machine (CPU: ~10 minutes)
    python -m bench --only image,paper   # some figures
    python -m bench --quick              # tiny models: checks that it runs (seconds)
    python -m bench --only gpu           # figure 6, on a CUDA machine
    python -m bench --only raster        # figure 12: the raster loader on 13-band GeoTIFFs
    python -m bench --threads 1          # steadier ratios on a busy shared CPU
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

import mim  # noqa: F401  (torchvision import fix before timm; registers the built-ins)
from bench.harness import Row, Settings, machine, precisions, table
from mim.engine import compiling

FIGURES = ("image", "video", "paper", "data", "pipeline", "shards", "memory", "resolution",
           "feed", "gpu", "raster")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(FIGURES)}")
    p.add_argument("--quick", action="store_true",
                   help="tiny models and one round: checks that the suite runs")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per case")
    p.add_argument("--compile", nargs="?", const="blocks", default="",
                   help="also time our image and video steps with train.compile: blocks (the "
                        "default), model, or both comma-separated (slow to compile on a CPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's, one per core); on a shared machine 1 "
                        "keeps a preempted thread from stalling the other at every barrier")
    p.add_argument("--precisions", default=None,
                   help="of fp32,bf16,fp16 for the step figures (default: fp32, and bf16 where "
                        "the device computes it natively)")
    p.add_argument("--json", default=None, help="also write the rows and the machine here")
    args = p.parse_args(argv)
    args.figures = [f for f in args.only.split(",") if f] or [
        f for f in FIGURES if f != "gpu" or torch.cuda.is_available()]
    unknown = sorted(set(args.figures) - set(FIGURES))
    if unknown:
        p.error(f"--only: unknown figure {unknown[0]!r}; valid: {', '.join(FIGURES)}")
    args.compile_modes = tuple(m for m in args.compile.split(",") if m)
    bad = [m for m in args.compile_modes if m not in compiling.MODES[1:]]
    if bad:
        p.error(f"--compile: {bad[0]!r} is not one of: {', '.join(compiling.MODES[1:])}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen, left_out = precisions(device, args.quick, args.precisions)
    except ValueError as exc:
        print(f"python -m bench: error: {exc}", file=sys.stderr)
        return 2
    settings = Settings(warmup=1, rounds=args.rounds or (1 if args.quick else 5),
                        rounds_asked=args.rounds is not None,
                        quick=args.quick, device=device, precisions=chosen)
    info = machine()
    print(" ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    if left_out:
        print(left_out, flush=True)
    rows: list[Row] = []
    for figure in args.figures:
        start = time.perf_counter()
        rows += run_figure(figure, settings, args)
        print(f"[{figure}: {time.perf_counter() - start:.0f} s]", file=sys.stderr, flush=True)
    if args.quick:
        print("--quick: tiny models, one round; this checks that the suite runs, the figures "
              "measure nothing")
    print(table(rows))
    if left_out:
        print(f"\n{left_out}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "precisions": list(chosen), "left_out": left_out,
                       "rows": [r.__dict__ for r in rows]}, f, indent=2)
    return 0


def run_figure(figure: str, settings: Settings, args: argparse.Namespace) -> list[Row]:
    if figure == "image":
        from bench import image
        return image.run(settings, compile=args.compile_modes)
    if figure == "video":
        from bench import video
        return video.run(settings, compile=args.compile_modes)
    if figure == "paper":
        from bench import paper
        return paper.run(settings)
    if figure == "data":
        from bench import loader
        return loader.run(settings)
    if figure == "pipeline":
        from bench import pipeline
        return pipeline.run(settings)
    if figure == "shards":
        from bench import shards
        return shards.run(settings)
    if figure == "resolution":
        from bench import resolution
        return resolution.run(settings)
    if figure == "feed":
        from bench import feed
        return feed.run(settings)
    if figure == "memory":
        from bench import memory
        return memory.run(settings)
    if figure == "raster":
        from bench import raster
        return raster.run(settings)
    from bench import gpu
    return gpu.run(settings, args)


if __name__ == "__main__":
    sys.exit(main())
