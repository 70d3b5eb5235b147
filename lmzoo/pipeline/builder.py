"""A build: the stages of one recipe run in order (``lmzoo.pipeline.stages``), each computed once per
build and cached in the work directory. ``lmzoo build`` runs :func:`build`; ``lmzoo tables`` asks a
:class:`Build` for one table, through the same stage code."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from lmzoo.core.spec import Spec
from lmzoo.engine import trace
from lmzoo.errors import InvalidArgumentError, LmzooError
from lmzoo.files import file_sha256
from lmzoo.pipeline.base import base_key, base_stage, base_weights_file
from lmzoo.pipeline.card import card_stage
from lmzoo.pipeline.evaluate import evaluate_stage, seed_spread
from lmzoo.pipeline.finetune import finetune_stage
from lmzoo.pipeline.generation import check_feature_model
from lmzoo.pipeline.importance import importance_stage
from lmzoo.pipeline.inputs import BuildInputs
from lmzoo.pipeline.latency import latency_stage
from lmzoo.pipeline.merge import merge_stage
from lmzoo.pipeline.refine import refine_stage
from lmzoo.pipeline.solve import solve_stage
from lmzoo.pipeline.stages import Stage
from lmzoo.pipeline.workspace import Workspace
from lmzoo.recipes import Recipe
from lmzoo.records import TASK_METRIC
from lmzoo.tables import ImportanceTable, LatencyTable
from lmzoo.training.distributed import distributed, init_distributed, is_main_process, main_first, world_size

Log = Callable[[str], None]


class Build:
    """One recipe's build: its work directory, its inputs (data sets constructed once), and each
    stage's result, computed on first use (on rank 0 first under ``torchrun``)."""

    def __init__(
        self,
        recipe: Recipe,
        *,
        workdir: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        progress: bool = True,
        log: Log | None = None,
    ) -> None:
        self.recipe = recipe
        self.workspace = Workspace.for_recipe(recipe, workdir)
        self.inputs = BuildInputs(recipe)
        self.device = init_distributed(device)
        self.main_process = is_main_process()
        self.progress = progress and self.main_process
        self.say: Log = (log if self.main_process else None) or (lambda message: None)
        self.clock = StageClock()
        if distributed():
            import torch.distributed as dist

            self.say(
                f"DDP: {world_size()} processes, {dist.get_backend()} backend, fine-tuning on {self.device}"
            )

    @cached_property
    def base(self) -> nn.Module:
        model = main_first(
            lambda: base_stage(self.workspace, self.inputs, device=self.device, progress=self.progress)
        )
        self.say(f"base: {self.workspace.stage(Stage.BASE, base_key(self.recipe))} {self.clock.lap()}")
        return model

    @cached_property
    def base_weights_sha256(self) -> str:
        """The digest of the base weights every entry of this build is compressed from: entries of
        two bases (a retrained one) are told apart by it in their configs and in the results."""
        self.base  # noqa: B018 -- the base stage writes the file
        return file_sha256(base_weights_file(self.workspace))

    def check_architecture(self) -> None:
        """Trace the recipe's architecture with random weights on one of its images, unless its base
        is already built: a network that cannot run on the recipe's inputs, or that lmzoo cannot
        compress, is one error now rather than after the base has trained for hours."""
        if base_weights_file(self.workspace).is_file():
            return
        try:
            trace(self.inputs.random_model(), self.inputs.example_inputs())
        except LmzooError as err:
            raise InvalidArgumentError(f"{self.recipe.path}: model {self.recipe.model.arch}: {err}") from None

    @cached_property
    def traced(self) -> tuple[Spec, tuple[torch.Tensor, ...]]:
        """The base network's spec and the example inputs (one training image) it was traced with."""
        example = self.inputs.example_inputs()
        return trace(self.base, example), example

    @cached_property
    def latency(self) -> tuple[LatencyTable, Path]:
        spec, example = self.traced
        table, path = main_first(
            lambda: latency_stage(self.workspace, self.base, spec, example, progress=self.progress)
        )
        self.say(f"latency table: {path} {self.clock.lap()}")
        if table.metadata.get("contended"):
            self.say(
                f"latency table: {len(table.metadata['contended'])} measurements look contended (another "
                f"process was running); to re-measure, delete {path.parent} and rerun on an idle machine"
            )
        return table, path

    def importance(
        self,
        *,
        estimator: str | None = None,
        shard: tuple[int, int] | None = None,
        executor: str = "local",
        states: bool | None = None,
    ) -> tuple[ImportanceTable, Path]:
        """The importance table; with activation states (``states``; default: when the recipe
        builds depth compression with ``solve.depth_states``) for a depth entry."""
        solve = self.recipe.solve
        if states is None:
            states = solve.method == "depth" and solve.depth_states
        spec, _ = self.traced
        table, path = main_first(
            lambda: importance_stage(
                self.workspace,
                self.inputs,
                self.base,
                spec,
                estimator=estimator,
                shard=shard,
                executor=executor,
                device=self.device,
                progress=self.progress,
                states=states,
            )
        )
        self.say(f"importance table: {path} {self.clock.lap()}")
        return table, path

    def entry(self, speedup: float, until: Stage, importance: ImportanceTable) -> Path | None:
        """The stages of one target speed-up, up to ``until``; the store directory when written."""
        ws, name = self.workspace, self.recipe.entry_name(speedup)
        spec, example = self.traced
        latency, _ = self.latency
        solve = main_first(lambda: solve_stage(ws, latency, importance, speedup))
        self.say(f"{name}: plan predicted at {solve.predicted_ms:.4g} ms {self.clock.lap()}")
        if self.recipe.solve.refine_top > 1:
            first = solve
            solve = main_first(
                lambda: refine_stage(
                    ws, self.inputs, self.base, spec, latency, importance, first, device=self.device
                )
            )
            r = solve.refinement
            if r is not None:
                self.say(
                    f"{name}: re-ranked the tables' {len(r.candidates)} best plans by a short recovery "
                    f"of each: building rank {r.chosen_rank}, predicted at {solve.predicted_ms:.4g} ms "
                    f"{self.clock.lap()}"
                )
        if solve.unreachable_max_speedup is not None:
            self.say(
                f"{name}: {speedup:g}x is beyond the latency table (its fastest plan: "
                f"{solve.unreachable_max_speedup:.3f}x); built that plan (solve.unreachable: fastest)"
            )
        if not until.reaches(Stage.FINETUNE):
            return None
        task, train_set, test_set = self.inputs.task, self.inputs.train_set, self.inputs.test_set
        seeds = [self.recipe.seed + k for k in range(self.recipe.seeds)]
        tuned = {
            seed: finetune_stage(
                ws,
                self.base,
                spec,
                solve.plan,
                train_set,
                task,
                name=name if seed == seeds[0] else f"{name} (seed {seed})",
                device=self.device,
                progress=self.progress,
                seed=seed,
            )
            for seed in seeds
        }
        configured = tuned[seeds[0]]
        self.say(
            f"{name}: fine-tuned{f' from {len(seeds)} seeds' if len(seeds) > 1 else ''} {self.clock.lap()}"
        )
        if not until.reaches(Stage.MERGE) or not self.main_process:
            return None
        merged, merge_record = merge_stage(ws, configured, solve.plan, test_set, task)
        self.say(
            f"{name}: merged, relative output difference {merge_record.relative_error:.1e} {self.clock.lap()}"
        )
        if not until.reaches(Stage.EVALUATE):
            return None
        evaluation, evaluation_file = evaluate_stage(
            ws,
            self.base,
            spec,
            solve.plan,
            merged,
            merge_record,
            test_set,
            task,
            latency,
            name=name,
            device=self.device,
        )
        if len(seeds) > 1:
            spread = seed_spread(ws, solve.plan, evaluation.test, tuned, test_set, task, device=self.device)
            evaluation = dataclasses.replace(evaluation, spread=spread)
            metric = TASK_METRIC[task.name]
            self.say(
                f"{name}: test {metric} {spread.mean(metric):.4g} ± {spread.sd(metric):.2g} "
                f"over seeds {', '.join(map(str, spread.seeds))}"
            )
        card = evaluation.latency_card
        self.say(
            f"{name}: measured speed-up {card.speedup:.2f}x, test {dict(evaluation.test)} {self.clock.lap()}"
        )
        if card.measurement.contended:
            self.say(
                f"{name}: the end-to-end timing looks contended; delete its evaluate-* stage, rerun when idle"
            )
        if not until.reaches(Stage.CARD):
            return None
        written = card_stage(
            ws,
            name=name,
            spec=spec,
            merged=merged,
            evaluation=evaluation,
            evaluation_file=evaluation_file,
            solve=solve,
            latency=latency,
            importance=importance,
            example=example,
            preprocessing=self.inputs.preprocessing,
            base_weights_sha256=self.base_weights_sha256,
        )
        self.say(f"{name}: written to {written} {self.clock.lap()}")
        return written


def build(
    recipe: Recipe | str | os.PathLike[str],
    *,
    speedups: Sequence[float] | None = None,
    profile: str | None = None,
    method: str | None = None,
    workdir: str | os.PathLike[str] | None = None,
    until: Stage | str = Stage.CARD,
    device: str = "cpu",
    progress: bool = True,
    log: Log | None = None,
) -> list[Path]:
    """Run the stages up to ``until`` for each target speed-up; returns the checkpoint directories
    written to the local store. Every stage is cached, so a rerun resumes where it stopped.

    ``recipe``: a Recipe, or a recipe file, recipe name or zoo entry name (resolved with ``profile``
    and ``method``). ``speedups``: the targets (default: the entry's, else the recipe's); any
    speed-up above 1 may be asked for, so a target the recipe does not list reuses its base and
    tables, and is named by the same rule (``<recipe>-<s>x``)."""
    from lmzoo.recipes import check_speedups, load_recipe

    if not isinstance(recipe, Recipe):
        recipe, entry_speedup = load_recipe(recipe, profile, method=method)
        if speedups is None and entry_speedup is not None:
            speedups = [entry_speedup]
    elif profile is not None or method is not None:
        raise InvalidArgumentError("profile= and method= apply to a recipe given by name or file")
    targets = check_speedups(
        recipe, list(speedups) if speedups is not None else recipe.solve.speedups_of(recipe.solve.method)
    )
    if not targets:
        raise InvalidArgumentError(
            f"no speed-up to build: {recipe.name} lists none for method {recipe.solve.method}; give "
            "one (lmzoo build --speedup S, or speedups= in Python)"
        )
    until = Stage.parse(until)
    session = Build(recipe, workdir=workdir, device=device, progress=progress, log=log)
    if until.reaches(Stage.EVALUATE) and recipe.evaluate.feature_model:
        check_feature_model(recipe, session.inputs.preprocessing)  # before hours of training, not after
    if until.reaches(Stage.LATENCY):
        session.check_architecture()
    written: list[Path] = []
    _ = session.base  # each stage runs (or is read from the cache) when first asked for
    if until.reaches(Stage.LATENCY):
        _ = session.latency
    if until.reaches(Stage.IMPORTANCE):
        importance, _ = session.importance()
        if until.reaches(Stage.SOLVE):
            for speedup in targets:
                path = session.entry(float(speedup), until, importance)
                if path is not None:
                    written.append(path)
    session.say(f"build finished in {session.clock.total()}")
    return written


class StageClock:
    """Wall time of each stage for the build log ("(4 min 12 s)"; cached stages take ~0 s)."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()

    @staticmethod
    def _format(seconds: float) -> str:
        minutes, secs = divmod(round(seconds), 60)
        return f"{minutes} min {secs} s" if minutes else f"{seconds:.1f} s"

    def lap(self) -> str:
        now = time.perf_counter()
        lap, self.last = now - self.last, now
        return f"({self._format(lap)})"

    def total(self) -> str:
        return self._format(time.perf_counter() - self.started)
