"""Stages of a grid as a DAG, and the executors that run them.

A :class:`Stage` is one unit of work whose output is an artifact keyed by a hash of everything
that determines it. It is a small picklable description (kind, key, seed, the names of the grid's
methods it applies, its parents' keys), not a closure: any process that holds the grid can execute
it. Executors only see stages, their dependencies and an ``execute(stage, inputs)`` callable, so a
distributed executor (e.g. one Ray task per stage) can replace :class:`LocalExecutor` without
touching the planner.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Protocol

from ebyd_bench.benchmark.progress import StageDisplay

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    key: str
    kind: str  # "train", "expose" or "cell"
    label: str  # human-readable, for logs and progress bars
    deps: tuple[str, ...]  # keys of the stages whose outputs this one reads
    seed: int
    attack: str  # the grid's attack (its name)
    exposure: str | None = None  # the grid's exposure (its label), None for none
    defense: str | None = None  # the grid's defense (its label), cells only


#: executes one stage given {dep_key: dep_output}; returns the stage's output
Execute = Callable[[Stage, dict[str, Any]], Any]
#: called in the driver process with every finished stage and its output (e.g. to store a record)
OnDone = Callable[[Stage, Any], None]


class Executor(Protocol):
    def run(self, stages: list[Stage], execute: Execute, on_done: OnDone | None = None) -> dict[str, Any]:
        """Run every stage after its dependencies, calling ``on_done`` as each finishes; return
        {key: output} of the sink stages."""


def topological_order(stages: list[Stage]) -> list[Stage]:
    """Stages sorted so that dependencies come first; raises on unknown deps or cycles."""
    by_key = {s.key: s for s in stages}
    order: list[Stage] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(stage: Stage) -> None:
        if state.get(stage.key) == 2:
            return
        if state.get(stage.key) == 1:
            raise ValueError(f"dependency cycle at stage {stage.label}")
        state[stage.key] = 1
        for dep in stage.deps:
            if dep not in by_key:
                raise ValueError(f"stage {stage.label} depends on unknown stage {dep[:12]}")
            visit(by_key[dep])
        state[stage.key] = 2
        order.append(stage)

    for s in stages:
        visit(s)
    return order


class Outputs:
    """Outputs of finished stages, each kept until its last dependent stage has read it."""

    def __init__(self, stages: list[Stage]) -> None:
        self.consumers = {s.key: sum(s.key in t.deps for t in stages) for s in stages}
        self.kept: dict[str, Any] = {}
        self.sinks: dict[str, Any] = {}

    def inputs(self, stage: Stage) -> dict[str, Any]:
        return {d: self.kept[d] for d in stage.deps}

    def finished(self, stage: Stage, result: Any) -> None:
        for dep in stage.deps:
            self.consumers[dep] -= 1
            if self.consumers[dep] == 0:
                self.kept.pop(dep, None)
        (self.kept if self.consumers[stage.key] else self.sinks)[stage.key] = result


class LocalExecutor:
    """Runs stages one after another in this process, freeing outputs nobody needs any more."""

    def run(self, stages: list[Stage], execute: Execute, on_done: OnDone | None = None) -> dict[str, Any]:
        order = topological_order(stages)
        outputs = Outputs(order)
        with StageDisplay(len(order)) as display:
            for stage in order:
                display.running(stage.label)
                log.info("stage %s", stage.label)
                result = execute(stage, outputs.inputs(stage))
                outputs.finished(stage, result)
                if on_done is not None:
                    on_done(stage, result)
                display.finished(stage.label)
        return outputs.sinks


class Dispatcher(Protocol):
    """How a concurrent executor hands stages to its workers (processes, Ray tasks)."""

    def submit(self, stage: Stage, inputs: dict[str, Any]) -> Hashable:
        """Start ``stage`` somewhere; return a handle for :meth:`wait`."""

    def wait(self, handles: list[Hashable]) -> list[tuple[Hashable, Any]]:
        """Block until at least one handle finished; return (handle, output) of those that did.
        A failed stage raises here."""


def run_dispatched(stages: list[Stage], dispatcher: Dispatcher, on_done: OnDone | None = None) -> dict[str, Any]:
    """Run stages as soon as their parents have finished, as many at once as the dispatcher takes;
    ``on_done`` is called here, in the driver, as each stage finishes."""
    order = topological_order(stages)
    outputs, waiting, done = Outputs(order), list(order), set()
    running: dict[Hashable, Stage] = {}
    with StageDisplay(len(order)) as display:
        while waiting or running:
            for stage in [s for s in waiting if all(d in done for d in s.deps)]:
                waiting.remove(stage)
                running[dispatcher.submit(stage, outputs.inputs(stage))] = stage
            for handle, result in dispatcher.wait(list(running)):
                stage = running.pop(handle)
                log.info("stage %s", stage.label)
                outputs.finished(stage, result)
                done.add(stage.key)
                if on_done is not None:
                    on_done(stage, result)
                display.finished(stage.label)
    return outputs.sinks

