"""``ebyd-bench`` command line.

    ebyd-bench run CONFIG --out DIR [--data-root PATH] [--cache-dir PATH] [--device cpu|cuda[:N][,cuda:M...]]
                   [--jobs N] [--executor local|ray] [--shard I/N] [--set KEY=VALUE ...] [--dry-run]
    ebyd-bench ls attacks|exposures|defenses|models|datasets [NAME]
    ebyd-bench bench [--device D] [--model M] [--config CONFIG --jobs N] [--records DIR] [--out DIR]
    ebyd-bench gallery --out DIR [--config CONFIG] [--data-root PATH]
    ebyd-bench report DIR [DIR ...] [--out DIR] [--no-figures]
    ebyd-bench tables DIR [DIR ...] --out DIR
    ebyd-bench figures DIR [DIR ...] --out DIR
    ebyd-bench compare BASELINE CURRENT [--tolerance ca=0.01,asr=0.02] [--time-tolerance 0.5]
    ebyd-bench cache ls|verify|rm [KEY_PREFIX ...] [--cache-dir PATH] [--kind KIND]
    ebyd-bench cache export KEY_PREFIX... --out FILE | cache import FILE  [--cache-dir PATH]

User errors (bad config, unknown name, missing data, corrupted cache) print one line starting
with ``error:`` and exit with code 2; nothing is written before the config has been validated.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# OpenMP threads that spin while waiting slow training down >5x as soon as anything else uses a
# core (a shared workstation, a CI runner); sleeping waiters cost almost nothing when the machine
# is idle. Must be set before torch is imported; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ebyd_bench.benchmark.errors import BenchmarkError, ConfigError  # noqa: E402

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ebyd-bench",
                                description="Benchmark of backdoor defenses (Expose Before You Defend).")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run (or resume) an attack × exposure × defense grid")
    run.add_argument("config", type=Path, help="grid YAML, e.g. configs/quick.yaml")
    run.add_argument("--out", type=Path, required=True, help="output folder (results.jsonl, leaderboard, log)")
    run.add_argument("--data-root", type=Path, default=None, help="data folder (default: $EBYD_DATA_ROOT)")
    run.add_argument("--cache-dir", type=Path, default=None,
                     help="artifact cache shared between grids (default: $EBYD_CACHE_DIR or the user cache folder)")
    run.add_argument("--device", default=None,
                     help="cpu, cuda, cuda:N, or a list cuda:0,cuda:1 (one worker pool per device; default: the "
                          "config's device)")
    run.add_argument("--jobs", type=_positive, default=None, metavar="N",
                     help="run up to N independent stages at once per device, each in its own worker process "
                          "(default: 1 on CPU; on a GPU as many as its free memory holds)")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="local: this machine's processes (default); ray: one Ray task per stage, on a local Ray "
                          "instance or the cluster at $RAY_ADDRESS (pip install 'ebyd-bench[ray]')")
    run.add_argument("--shard", type=_shard, default=(0, 1), metavar="I/N",
                     help="run only shard I of N (0 ≤ I < N): every N-th poisoned model and its cells; start N "
                          "runs with the same --out and cache, e.g. one per GPU or job-array task")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="change one setting of the config, e.g. --set recipe.epochs=4 --set seeds=[0,1] "
                          "(dotted key, YAML value; repeatable; recorded in OUT/config.yaml)")
    run.add_argument("--dry-run", action="store_true",
                     help="print the cells left to run and which models and exposures the cache already "
                          "holds; train nothing and write no results (the decoded dataset may be cached, as any "
                          "run does)")

    ls = sub.add_parser("ls", help="list registered methods")
    ls.add_argument("kind", choices=["attacks", "exposures", "defenses", "models", "datasets"])
    ls.add_argument("name", nargs="?", help="show this entry in full: description and every parameter with its "
                                            "type, allowed range and default")

    bench = sub.add_parser("bench", help="training throughput on this device (project loop vs a bare loop), "
                                         "and a grid's projected victim-training time")
    bench.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    bench.add_argument("--model", default="resnet18", help="registered image model (default: resnet18)")
    bench.add_argument("--batch-size", type=_positive, default=128)
    bench.add_argument("--steps", type=_positive, default=40, help="timed training steps per loop (default: 40)")
    bench.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="auto")
    bench.add_argument("--compile", choices=["off", "default", "reduce-overhead"], default="off",
                       help="torch.compile mode of the project loop (reduce-overhead: CUDA graphs on a GPU); "
                            "compare with --compile off to see whether it pays (default: off)")
    bench.add_argument("--config", type=Path, default=None, help="grid whose victim training to project")
    bench.add_argument("--jobs", type=_positive, default=1,
                       help="also run N project loops at once on the device and measure their aggregate "
                            "img/s and per-worker memory; the projection then uses that rate (default: 1)")
    bench.add_argument("--data-root", type=Path, default=None, help="data folder (with --config)")
    bench.add_argument("--records", type=Path, default=None, help="a run's folder: mean seconds per stage kind")
    bench.add_argument("--out", type=Path, default=None, help="also write the figures to OUT/bench.json")
    bench.set_defaults(handler=_cmd_bench)

    gallery = sub.add_parser("gallery", help="figure of clean vs triggered examples for every image attack")
    gallery.add_argument("--out", type=Path, required=True, help="output folder (PNG and PDF)")
    gallery.add_argument("--data-root", type=Path, default=None, help="data folder (default: $EBYD_DATA_ROOT)")
    gallery.add_argument("--config", type=Path, default=None,
                         help="grid whose attacks (and their trained parts, via the cache) to draw; "
                              "default: every registered image attack, trained parts as placeholders")
    gallery.add_argument("--cache-dir", type=Path, default=None, help="artifact cache (with --config)")
    gallery.set_defaults(handler=_cmd_gallery)

    from ebyd_bench.reports.cli import add_commands

    add_commands(sub)  # report, tables, figures, compare (handlers in reports/cli.py)
    _add_cache_command(sub)
    return p


def _add_cache_command(sub: argparse._SubParsersAction) -> None:
    cache = sub.add_parser("cache", help="list, verify, remove, export or import cached artifacts "
                                         "(poisoned models, exposures, ...)")
    actions = cache.add_subparsers(dest="action", required=True)
    for name, helptext in (("ls", "list the cached artifacts"),
                           ("verify", "check every artifact against its recorded checksum (exit 1 if any is broken)"),
                           ("rm", "remove artifacts by key prefix"),
                           ("export", "write poisoned models and exposures (with their attack parts) to a zoo archive"),
                           ("import", "add the entries of a zoo archive to the cache, after checking all of them")):
        p = actions.add_parser(name, help=helptext)
        if name == "rm":
            p.add_argument("keys", nargs="+", help="key prefixes (≥ 6 hex digits), as `cache ls` prints them")
        if name == "export":
            p.add_argument("keys", nargs="*", help="key prefixes (≥ 6 hex digits) of models, exposures or attack "
                                                   "parts; an exposure brings its model, a model its attack parts")
            p.add_argument("--all", action="store_true", help="every model, exposure and attack part in the cache")
            p.add_argument("--out", type=Path, required=True, help="the archive to write (a .zip)")
        if name == "import":
            p.add_argument("archive", type=Path, help="a zoo archive written by `ebyd-bench cache export`")
        p.add_argument("--cache-dir", type=Path, default=None,
                       help="the cache (default: $EBYD_CACHE_DIR or the user cache folder)")
        if name != "import":
            p.add_argument("--kind", default=None,
                           help="only this kind: models, exposures, attack_parts, datasets, ...")
    cache.set_defaults(handler=_cmd_cache)


def _cmd_cache(args: argparse.Namespace) -> int:
    from ebyd_bench.benchmark.cache_admin import cmd_cache

    return cmd_cache(args)


def _cmd_ls(kind: str, name: str | None = None) -> int:
    from ebyd_bench.benchmark import catalog
    from ebyd_bench.benchmark.describe import describe, plain_doc
    from ebyd_bench.benchmark.registries import ALL
    from ebyd_bench.benchmark.registry import UnknownNameError

    registry = ALL[kind]
    if name is not None:
        try:
            print(describe(registry, name))
        except UnknownNameError as exc:
            raise ConfigError(exc.args[0]) from None
        return 0
    for name in registry.names():  # from the catalog: no method module (and no torch) is imported
        entry = catalog.describe(registry, name)
        category = f"[{entry.category}]".ljust(20) if kind == "defenses" else ""
        domain = "any" if name == "none" else entry.domain
        print(f"{name:<18} {category}{domain:<6} {plain_doc(entry.summary)}  ({entry.source})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ebyd_bench.benchmark.grid.config import load_configs
    from ebyd_bench.benchmark.io import default_cache_dir

    _check_out_dirs(("--out", args.out), ("--cache-dir", args.cache_dir or default_cache_dir()))
    grids = load_configs(args.config, args.overrides)  # checks every grid (before importing torch), then builds them
    from ebyd_bench.benchmark.grid.runner import RunOptions, dry_run, run_grid

    data_root = _data_root(args.data_root)
    for grid in grids:
        for device in _devices(args.device or grid.device):
            _check_device(device)
    for grid in grids:  # several grids (e.g. one per dataset) go to OUT/<grid name>/
        out = args.out if len(grids) == 1 else args.out / grid.name
        devices = _devices(args.device or grid.device)
        opts = RunOptions(out_dir=out, cache_dir=args.cache_dir or default_cache_dir(),
                          data_root=data_root, device=devices[0], shard=args.shard)
        if args.dry_run:
            print("\n".join(dry_run(grid, opts)))
            continue
        result = run_grid(grid, opts, _executor(grid, opts, args.executor, args.jobs, devices))
        summary = _write_reports(result.records, result.summary, out)
        print(f"{grid.name}: {summary['cells_run']} cells run, {summary['cells_skipped']} resumed, "
              f"{summary['models_trained']} poisoned models trained, {summary['wall_seconds']:.1f} s")
        print(f"leaderboard: {out / 'leaderboard.html'}, {out / 'leaderboard.tex'} and {out / 'leaderboard.md'}")
    return 0


def _devices(text: str) -> list[str]:
    return [d.strip() for d in text.split(",") if d.strip()] or ["cpu"]


def _executor(grid: Any, opts: Any, kind: str, jobs: int | None, devices: list[str]) -> Any:
    """None (stages one after another in this process), a pool of worker processes per device, or Ray."""
    from ebyd_bench.benchmark.grid.pool import PoolExecutor, default_jobs

    jobs = jobs or default_jobs(devices)
    if kind == "ray":
        from ebyd_bench.benchmark.grid.ray_executor import RayExecutor

        if len(devices) > 1:
            raise BenchmarkError("--executor ray places stages on GPUs itself: pass --device cuda, not a list")
        return RayExecutor(grid, opts, jobs)
    return None if jobs == 1 and len(devices) == 1 else PoolExecutor(grid, opts, jobs, devices)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive integer")
    return int(text)


def _check_out_dirs(*named: tuple[str, Path]) -> None:
    """Each folder must exist as a writable folder or be creatable (its nearest existing ancestor a
    writable folder); checked before anything is written, so a bad ``--out`` writes nothing anywhere."""
    for option, folder in named:
        path = Path(folder).absolute()
        probe = path
        while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            what = "is not a folder" if probe == path else f"cannot be created: {probe} is not a folder"
            raise BenchmarkError(f"{option} {folder} {what}")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise BenchmarkError(f"{option} {folder} is not writable ({probe} denies it)")


def _write_reports(records: Any, summary: dict[str, Any], out: Path) -> dict[str, Any]:
    """A run's leaderboard (HTML, LaTeX, Markdown) and ``summary.json`` with the grid statistics."""
    from ebyd_bench.benchmark.io import atomic_write_json
    from ebyd_bench.reports import render_leaderboard
    from ebyd_bench.reports.statistics import grid_statistics

    render_leaderboard(records, out)
    summary = {**summary, **grid_statistics(records)}
    atomic_write_json(out / "summary.json", summary)
    return summary


def _shard(text: str) -> tuple[int, int]:
    """``I/N`` → (I, N), with 0 ≤ I < N."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"'{text}' is not I/N with 0 ≤ I < N, e.g. 0/4")
    return int(index), int(count)


def _data_root(arg: Path | None) -> Path:
    root = arg or os.environ.get("EBYD_DATA_ROOT")
    if root is None:
        raise BenchmarkError("no data root: pass --data-root PATH or set EBYD_DATA_ROOT")
    return Path(root)


def _cmd_bench(args: argparse.Namespace) -> int:
    from ebyd_bench.benchmark import bench
    from ebyd_bench.benchmark.provenance import provenance

    _check_device(args.device)
    grid = None
    if args.config is not None:  # validate before measuring anything
        from ebyd_bench.benchmark.grid.config import load_config

        grid = load_config(args.config)
    setting = bench.BenchSetting(args.model, args.batch_size, args.steps, args.precision, args.device,
                                 compile=args.compile)
    figures: dict[str, Any] = {"setting": dataclasses.asdict(setting)}
    project = bench.project_loop(setting)
    figures["project_img_per_s"], figures["project_peak_gpu_bytes"] = project.img_per_s, project.peak_gpu_bytes
    figures["bare_img_per_s"] = bench.bare_loop(setting)
    figures["project_share_of_bare"] = figures["project_img_per_s"] / figures["bare_img_per_s"]
    compiled = "" if args.compile == "off" else f" (compiled, {args.compile})"
    print(f"{args.model} batch {args.batch_size} on {args.device}: project loop{compiled} "
          f"{figures['project_img_per_s']:,.0f} img/s, bare loop {figures['bare_img_per_s']:,.0f} img/s "
          f"({figures['project_share_of_bare']:.0%}){_gib(project.peak_gpu_bytes, ', peak {} GiB')}")
    rate = _concurrent(args, setting, figures) if args.jobs > 1 else figures["project_img_per_s"]
    records = None
    if args.records is not None:
        from ebyd_bench.results import load_results

        records = load_results(args.records)
        figures["stage_seconds"] = bench.stage_seconds(records)
        print("mean seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in figures["stage_seconds"].items()))
    if grid is not None:
        figures["projection"] = _project(args, grid, figures["project_img_per_s"], rate, records)
    if args.out is not None:
        from ebyd_bench.benchmark.io import atomic_write_json

        atomic_write_json(args.out / "bench.json", {**figures, "provenance": provenance(args.device)})
    return 0


def _concurrent(args: argparse.Namespace, setting: Any, figures: dict[str, Any]) -> float:
    """``bench --jobs N``: N project loops at once on the device; returns their aggregate img/s."""
    from ebyd_bench.benchmark import bench
    from ebyd_bench.benchmark.grid.pool import STAGE_GPU_BYTES, worker_threads

    aggregate, each = bench.concurrent_project_loops(setting, args.jobs, worker_threads(args.jobs))
    figures["concurrent"] = {"jobs": args.jobs, "aggregate_img_per_s": aggregate.img_per_s,
                             "worker_img_per_s": each, "peak_gpu_bytes_per_worker": aggregate.peak_gpu_bytes}
    print(f"{args.jobs} project loops at once: {aggregate.img_per_s:,.0f} img/s together "
          f"({min(each):,.0f}-{max(each):,.0f} each){_gib(aggregate.peak_gpu_bytes, ', at most {} GiB per worker')}")
    if aggregate.peak_gpu_bytes:
        import torch

        free = torch.cuda.mem_get_info(torch.device(args.device))[0]
        print(f"the free device memory holds {free // aggregate.peak_gpu_bytes} such workers (without --jobs, "
              f"run assumes {STAGE_GPU_BYTES / 2**30:.0f} GiB a stage)")
    return aggregate.img_per_s


def _project(args: argparse.Namespace, grid: Any, one_rate: float, rate: float, records: Any) -> dict[str, Any]:
    """``bench --config``: the grid's victim training at the measured rates (one worker's, and the
    aggregate of ``--jobs``), and with ``--records`` its whole wall-clock."""
    from ebyd_bench.benchmark import bench
    from ebyd_bench.benchmark.registries import DATASETS

    train_split = len(DATASETS.get(grid.dataset.name)(_data_root(args.data_root)).train)
    one = bench.project_training(grid, train_split, one_rate)
    at_jobs = bench.project_training(grid, train_split, rate, args.jobs)
    out = {"config": str(args.config), **at_jobs, "one_worker_hours": one["hours"]}
    shown = f", {_duration(at_jobs['hours'])} at --jobs {args.jobs} (measured)" if args.jobs > 1 else ""
    print(f"{grid.name}: {one['models']} poisoned models × {one['epochs']} epochs × "
          f"{one['train_images']:,} images: {_duration(one['hours'])} in one worker{shown} (victim training only)")
    if records is not None:
        from ebyd_bench.benchmark.grid.projection import project_grid

        measured = bench.method_seconds(records)
        # a victim in one of --jobs workers takes --jobs times as long as at the aggregate rate
        whole = project_grid(grid, at_jobs["victim_seconds"] * args.jobs, measured, args.jobs)
        whole["one_worker_hours"] = project_grid(grid, one["victim_seconds"], measured)["one_worker_hours"]
        out["whole_grid"] = whole
        missing = f"; not in those records (counted as 0): {', '.join(whole['not_measured'])}" \
            if whole["not_measured"] else ""
        print(f"{grid.name}, every stage ({whole['stages']}; exposures and cells as long as in {args.records}): "
              f"{_duration(whole['one_worker_hours'])} in one worker, at least {_duration(whole['hours_at_jobs'])} "
              f"at --jobs {args.jobs}{missing}")
    return out


def _duration(hours: float) -> str:
    """``0.15`` → ``9.0 min``, ``2.5`` → ``2.50 h``."""
    return f"{hours * 60:.1f} min" if hours < 1 else f"{hours:.2f} h"


def _gib(count: int | None, template: str) -> str:
    """``template`` filled with ``count`` bytes in GiB, or nothing when there is no count (CPU)."""
    return "" if count is None else template.format(f"{count / 2**30:.2f}")


def _cmd_gallery(args: argparse.Namespace) -> int:
    from ebyd_bench.reports.gallery import render_gallery
    from ebyd_bench.benchmark.io import default_cache_dir

    cache_dir = args.cache_dir or default_cache_dir()
    if args.config is None:
        from ebyd_bench.benchmark.registries import DATASETS

        paths = render_gallery(DATASETS.get("cifar10")(_data_root(args.data_root), cache_dir=cache_dir), args.out)
    else:
        from ebyd_bench.benchmark.grid.config import load_config
        from ebyd_bench.benchmark.grid.runner import RunOptions, build_domain

        grid = load_config(args.config)
        domain = build_domain(grid, RunOptions(args.out, cache_dir, _data_root(args.data_root), grid.device))
        attacks = [{"name": a.name, **a.spec.params} for a in grid.attacks]
        paths = render_gallery(domain.data, args.out, attacks, grid.seeds[0], ctx_factory=domain.attack_context)
    for p in paths:
        print(p)
    return 0


def _check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchmarkError(f"device '{device}' requested but CUDA is not available; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise BenchmarkError(f"unknown device '{device}': use cpu, cuda or cuda:N")


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: stop as Ctrl-C does."""


@contextmanager
def _sigterm_stops_like_ctrl_c() -> Iterator[None]:
    """While the command runs, SIGTERM (``kill PID``, ``timeout``, a scheduler cancelling the job) raises
    :class:`Terminated` in the driver, so its ``--jobs`` workers are stopped with it instead of training on
    as orphans. Only the main thread can install a handler; elsewhere SIGTERM keeps its default."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.raiseExceptions = False  # a log line that cannot be written (a full disk) must not print a traceback
    try:
        with _sigterm_stops_like_ctrl_c():
            if args.command == "ls":
                return _cmd_ls(args.kind, args.name)
            if args.command == "run":
                return _cmd_run(args)
            return args.handler(args)  # gallery, cache and the reporting subcommands
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: workers are stopped; cached artifacts and records stay
        print("interrupted: what finished is kept; run the same command again to resume", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" (writing {exc.filename})" if exc.filename else ""
        print(f"error: no space left on the device{where}: free some and run the same command again; finished "
              f"cells and cached artifacts are kept, nothing half-written is", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
