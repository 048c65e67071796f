"""``ebyd-bench`` command line.

    ebyd-bench run CONFIG --out DIR [--data-root PATH] [--cache-dir PATH] [--device cpu|cuda]
    ebyd-bench ls attacks|exposures|defenses|models|datasets
    ebyd-bench report DIR [DIR ...] [--out DIR]

User errors (bad config, unknown name, missing data, corrupted cache) print one line starting
with ``error:`` and exit with code 2; nothing is written before the config has been validated.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmark.errors import BenchmarkError

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ebyd-bench", description="Benchmark of backdoor defenses (Expose Before You Defend).")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run (or resume) an attack × exposure × defense grid")
    run.add_argument("config", type=Path, help="grid YAML, e.g. configs/quick.yaml")
    run.add_argument("--out", type=Path, required=True, help="output folder (results.jsonl, leaderboard, log)")
    run.add_argument("--data-root", type=Path, default=None, help="data folder (default: $EBYD_DATA_ROOT)")
    run.add_argument("--cache-dir", type=Path, default=None,
                     help="artifact cache shared between grids (default: $EBYD_CACHE_DIR or the user cache folder)")
    run.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the config's device)")

    ls = sub.add_parser("ls", help="list registered methods")
    ls.add_argument("kind", choices=["attacks", "exposures", "defenses", "models", "datasets"])

    report = sub.add_parser("report", help="re-render the leaderboard from result stores")
    report.add_argument("dirs", type=Path, nargs="+", help="output folders or results.jsonl files")
    report.add_argument("--out", type=Path, default=None, help="where to write (default: the first DIR)")
    return p


def _cmd_ls(kind: str) -> int:
    from benchmark.registries import ALL

    registry = ALL[kind]
    for name in registry.names():
        obj = registry.get(name)
        doc = (obj.__doc__ or "").strip().splitlines()
        extra = f" [{obj.category}]" if kind == "defenses" else ""
        print(f"{name:<18}{extra:<20} {doc[0] if doc else ''}  ({registry.source(name)})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from benchmark.cache import default_cache_dir
    from benchmark.config import load_config
    from benchmark.runner import RunOptions, run_grid

    cfg = load_config(args.config)  # validates everything before anything is written
    data_root = args.data_root or os.environ.get("EBYD_DATA_ROOT")
    if data_root is None:
        raise BenchmarkError("no data root: pass --data-root PATH or set EBYD_DATA_ROOT")
    device = args.device or cfg.device
    _check_device(device)
    opts = RunOptions(out_dir=args.out, cache_dir=args.cache_dir or default_cache_dir(),
                      data_root=Path(data_root), device=device)
    summary = run_grid(cfg, opts)
    print(f"{summary['cells_run']} cells run, {summary['cells_skipped']} resumed, "
          f"{summary['models_trained']} poisoned models trained, {summary['wall_seconds']:.1f} s")
    print(f"leaderboard: {args.out / 'leaderboard.html'} and {args.out / 'leaderboard.tex'}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from reports import render_leaderboard
    from results import load_results

    try:
        records = load_results(*args.dirs)
    except FileNotFoundError as exc:
        raise BenchmarkError(str(exc)) from None
    if records.empty:
        raise BenchmarkError("no result records found")
    paths = render_leaderboard(records, args.out or args.dirs[0])
    for p in paths.values():
        print(p)
    return 0


def _check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchmarkError(f"device '{device}' requested but CUDA is not available; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise BenchmarkError(f"unknown device '{device}': use cpu, cuda or cuda:N")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "ls":
            return _cmd_ls(args.kind)
        if args.command == "run":
            return _cmd_run(args)
        return _cmd_report(args)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
