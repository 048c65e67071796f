"""The ``report``, ``tables``, ``figures`` and ``compare`` subcommands of ``ebyd-bench``.

    ebyd-bench report DIR [DIR ...] [--out DIR] [--no-figures]   leaderboard.html/.tex/.md + figures/ + tables/
    ebyd-bench tables DIR [DIR ...] --out DIR                     paper tables (booktabs) + tables.tex
    ebyd-bench figures DIR [DIR ...] --out DIR                    PNG + PDF figures
    ebyd-bench compare BASELINE CURRENT [--tolerance ca=0.01,asr=0.02] [--time-tolerance 0.5]
                       [--match key|fields] [--out REPORT.md]

Each handler returns the exit code; bad input raises ``BenchmarkError`` (exit 2). Heavy imports
(pandas, matplotlib) happen inside the handlers so ``ebyd-bench ls`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ebyd_bench.benchmark.errors import BenchmarkError


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the reporting subcommands; each sets ``handler`` on the parsed namespace."""
    report = sub.add_parser("report", help="render the leaderboard site, figures and paper tables from result stores")
    _stores(report)
    report.add_argument("--out", type=Path, default=None, help="where to write (default: the first DIR)")
    report.add_argument("--no-figures", action="store_true", help="skip the figures (faster; page without images)")
    report.set_defaults(handler=cmd_report)

    for name, helptext, handler in (("tables", "write paper-ready LaTeX (booktabs) tables", cmd_tables),
                                    ("figures", "write paper figures as PNG and PDF", cmd_figures)):
        p = sub.add_parser(name, help=helptext)
        _stores(p)
        p.add_argument("--out", type=Path, required=True, help="output folder")
        p.set_defaults(handler=handler)

    cmp = sub.add_parser("compare", help="regression check of CURRENT against BASELINE (exit 1 on regression)")
    cmp.add_argument("baseline", type=Path, help="baseline output folder or results.jsonl")
    cmp.add_argument("current", type=Path, help="current output folder or results.jsonl")
    cmp.add_argument("--tolerance", default=None,
                     help="absolute tolerances as NAME=VALUE,..., e.g. ca=0.01,asr=0.02,strip_auroc=0.03,default=0.02")
    cmp.add_argument("--time-tolerance", type=float, default=0.5,
                     help="report cells whose wall-clock changed by more than this fraction (informational)")
    cmp.add_argument("--match", choices=["key", "fields"], default="key",
                     help="pair cells by cell_key (default) or by dataset/model/attack/exposure/defense/params/seed")
    cmp.add_argument("--out", type=Path, default=None, help="also write the Markdown report to this file")
    cmp.set_defaults(handler=cmd_compare)


def _stores(p: argparse.ArgumentParser) -> None:
    p.add_argument("dirs", type=Path, nargs="+", help="output folders or results.jsonl files")


def _records(dirs: list[Path]):
    """All records of the given stores as one DataFrame; missing stores, lines that are not records or
    no records -> BenchmarkError."""
    from ebyd_bench.results import load_results

    try:
        records = load_results(*dirs)
    except (FileNotFoundError, ValueError) as exc:
        raise BenchmarkError(str(exc)) from None
    if records.empty:
        raise BenchmarkError("no result records found")
    return records


def _print(paths) -> int:
    for p in paths:
        print(p)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ebyd_bench.reports import render_figures, render_leaderboard, render_tables

    records = _records(args.dirs)
    out = args.out or args.dirs[0]
    out = out.parent if out.suffix == ".jsonl" else out
    paths = list(render_leaderboard(records, out, figures=not args.no_figures).values())
    if not args.no_figures:
        paths += render_figures(records, out / "figures")
    paths += render_tables(records, out / "tables")
    return _print(paths)


def cmd_tables(args: argparse.Namespace) -> int:
    from ebyd_bench.reports import render_tables

    return _print(render_tables(_records(args.dirs), args.out))


def cmd_figures(args: argparse.Namespace) -> int:
    from ebyd_bench.reports import render_figures

    return _print(render_figures(_records(args.dirs), args.out))


def cmd_compare(args: argparse.Namespace) -> int:
    from ebyd_bench.benchmark.io import atomic_write_text
    from ebyd_bench.reports.compare import compare, load_store, parse_tolerances, render_markdown, run_wall_seconds

    try:
        tolerances = parse_tolerances(args.tolerance)
        baseline, current = load_store(args.baseline), load_store(args.current)
        result = compare(baseline, current, tolerances, args.time_tolerance, args.match,
                         run_seconds=(run_wall_seconds(args.baseline), run_wall_seconds(args.current)))
    except (FileNotFoundError, ValueError) as exc:
        raise BenchmarkError(str(exc)) from None
    if not baseline:
        raise BenchmarkError(f"no result records in baseline {args.baseline}")
    code = 1 if result.regressed else 0  # decided before printing: a closed pipe must not change it
    text = render_markdown(result, str(args.baseline), str(args.current), args.time_tolerance)
    if args.out is not None:
        atomic_write_text(args.out, text)
    _print_through_pipe(text)
    return code


def _print_through_pipe(text: str) -> None:
    """Print and flush ``text``; when the reader has gone (``| head``), drop the rest quietly instead of
    raising (the CLI's broken-pipe path would turn the exit code into 0) or failing at exit (120)."""
    import os
    import sys

    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
