"""The build's records (DESIGN §12): what the solve, merge, evaluate and export steps write and what cards,
results and the command line read. Each is a dataclass with ``to_dict`` / ``from_dict``, a format
version, and ``save`` / ``load`` (``lmzoo.files.JsonFile``). Files written by earlier versions, which
had no format key, read as version 1."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from lmzoo.core.plan import Plan
from lmzoo.errors import LmzooError
from lmzoo.files import JsonFile
from lmzoo.latency.card import LatencyCard

T = TypeVar("T")

#: the metric each task's evaluation reports (its ``test`` and ``base_test`` hold it)
TASK_METRIC = {"classification": "accuracy", "denoising": "loss"}


def test_metrics(data: Any, task: str) -> dict[str, float]:
    """Test metrics of ``task`` (name -> finite number, the task's metric among them)."""
    return _metrics(data, TASK_METRIC[task])


class RecordError(LmzooError):
    """A record file is not what its name says (malformed, or of another format)."""


def _parsed(kind: str, expected: str, data: Any, build: Callable[[dict[str, Any]], T]) -> T:
    if not isinstance(data, dict) or data.get("format", expected) != expected:
        raise RecordError(f"not an lmzoo {kind}: expected 'format': {expected!r}")
    try:
        return build(data)
    except (KeyError, TypeError, ValueError, LmzooError) as err:
        raise RecordError(f"malformed {kind} ({type(err).__name__}: {err})") from None


def _metrics(data: Any, metric: str) -> dict[str, float]:
    """Test metrics (name -> finite number), the task's ``metric`` among them."""
    # integers (an example count) stay integers, so a record read back is written back byte for byte
    metrics = {
        str(k): v if type(v) is int else float(v) for k, v in dict(data).items() if not isinstance(v, bool)
    }
    if metric not in metrics or not all(math.isfinite(v) for v in metrics.values()):
        raise ValueError(f"the test metrics must hold a finite {metric!r}, got {dict(data)}")
    return metrics


class Record(JsonFile):
    """A build record: its file is read with RecordError for anything malformed."""

    FILE_ERROR = RecordError


@dataclass(frozen=True)
class Refinement:
    """How the plan was re-ranked: the ``k`` most important distinct networks among the tables' best
    plans (each as its fastest plan), each scored by a short recovery of its whole configured
    network (``score``: the task's importance against the base, measured on the held-out subset),
    and the rank (1 = the solver's optimum) built."""

    k: int
    chosen_rank: int
    #: per candidate plan, best by the tables first: rank, surrogate value, predicted ms, score
    candidates: tuple[dict[str, float], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "chosen_rank": self.chosen_rank,
            "candidates": [dict(c) for c in self.candidates],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Refinement:
        rows = tuple({str(k): float(v) for k, v in dict(c).items()} for c in data["candidates"])
        return cls(int(data["k"]), int(data["chosen_rank"]), rows)


@dataclass(frozen=True)
class SolveRecord(Record):
    """The plan chosen for one target speed-up and what the tables say of it (``plan.json``)."""

    FORMAT = "lmzoo.solve-record/1"
    FILE_KIND = "solve record"

    target_speedup: float
    method: str
    levels: int | None
    objective: str
    #: the plan's network latency by the latency table (fixed cost included) and the base's
    predicted_ms: float
    predicted_base_ms: float | None
    #: the value of the objective the solver maximised
    importance: float
    plan: Plan
    #: the largest speed-up the table allows, when the target was beyond it (its fastest plan was built)
    unreachable_max_speedup: float | None = None
    #: set when the plan was chosen by re-ranking the tables' best plans (solve.refine_top)
    refinement: Refinement | None = None

    @property
    def predicted_speedup(self) -> float | None:
        if self.predicted_base_ms and self.predicted_ms:
            return self.predicted_base_ms / self.predicted_ms
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.FORMAT,
            "target_speedup": self.target_speedup,
            "unreachable": (
                None
                if self.unreachable_max_speedup is None
                else {"max_speedup": self.unreachable_max_speedup}
            ),
            "method": self.method,
            "levels": self.levels,
            "objective": self.objective,
            "predicted_ms": self.predicted_ms,
            "predicted_base_ms": self.predicted_base_ms,
            "importance": self.importance,
            "plan": self.plan.to_dict(),
            **({"refinement": self.refinement.to_dict()} if self.refinement is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Any) -> SolveRecord:
        def build(d: dict[str, Any]) -> SolveRecord:
            unreachable = d.get("unreachable")
            return cls(
                target_speedup=float(d["target_speedup"]),
                method=d.get("method", "layermerge"),
                levels=d.get("levels"),
                objective=d.get("objective", "sum"),
                predicted_ms=float(d["predicted_ms"]),
                predicted_base_ms=d.get("predicted_base_ms"),
                importance=float(d["importance"]),
                plan=Plan.from_dict(d["plan"]),
                unreachable_max_speedup=unreachable["max_speedup"] if unreachable else None,
                refinement=Refinement.from_dict(d["refinement"]) if d.get("refinement") else None,
            )

        return _parsed("solve record", cls.FORMAT, data, build)


@dataclass(frozen=True)
class MergeRecord(Record):
    """How a fine-tuned configured network merged: blocks, convolutions, and the largest output
    difference between merged and configured on test images, relative to max |output|."""

    FORMAT = "lmzoo.merge-record/1"
    FILE_KIND = "merge record"

    blocks: int
    convolutions: int
    relative_error: float

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Any) -> MergeRecord:
        return _parsed(
            "merge record",
            cls.FORMAT,
            data,
            lambda d: cls(int(d["blocks"]), int(d["convolutions"]), float(d["relative_error"])),
        )


@dataclass(frozen=True)
class SampleGrid:
    """DDPM: a PNG of samples of the base (left) and the merged network (right) from the same noise."""

    file: str
    count: int
    sampler: str
    seed: int


@dataclass(frozen=True)
class Frechet:
    """DDPM: Fréchet distance between generated and real test images, base and merged."""

    base: float
    merged: float
    #: "inception" (FID proper) or the zoo classifier whose features were used
    feature_model: str
    features: str
    samples: int
    sampler: str
    reference: str
    #: sha256 of the feature classifier's weights (None: Inception, or a record written before lmzoo
    #: kept it): a classifier rebuilt under the same name gives other distances
    feature_weights_sha256: str | None = None

    @property
    def feature_weights_short(self) -> str | None:
        """The digest's first 12 hex digits, as cards and results show it (None when unrecorded)."""
        return self.feature_weights_sha256[:12] if self.feature_weights_sha256 else None


@dataclass(frozen=True)
class Spread:
    """The same plan fine-tuned from several seeds: each one's test metrics of its merged network,
    the checkpoint's own first."""

    seeds: tuple[int, ...]
    test: tuple[Mapping[str, float], ...]

    def __post_init__(self) -> None:
        if (
            len(self.seeds) != len(self.test)
            or len(self.seeds) < 2
            or len(set(self.seeds)) != len(self.seeds)
        ):
            raise ValueError(f"a spread needs two or more distinct seeds, one result each, got {self.seeds}")

    def values(self, metric: str) -> list[float]:
        return [float(t[metric]) for t in self.test]

    def mean(self, metric: str) -> float:
        return math.fsum(self.values(metric)) / len(self.seeds)

    def sd(self, metric: str) -> float:
        """The sample standard deviation (n - 1)."""
        values, mean = self.values(metric), self.mean(metric)
        return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))

    def to_dict(self) -> dict[str, Any]:
        return {"seeds": list(self.seeds), "test": [dict(t) for t in self.test]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], metric: str) -> Spread:
        return cls(tuple(int(s) for s in data["seeds"]), tuple(_metrics(t, metric) for t in data["test"]))


@dataclass(frozen=True)
class Evaluation(Record):
    """Test metrics of base and merged, the merge check and the latency card (``evaluation.json``)."""

    FORMAT = "lmzoo.evaluation/1"
    FILE_KIND = "evaluation"

    task: str
    #: the task's metrics on the test split (accuracy, loss, ...), merged and base
    test: Mapping[str, float]
    base_test: Mapping[str, float]
    merge_relative_error: float
    latency_card: LatencyCard
    samples: SampleGrid | None = None
    frechet: Frechet | None = None
    #: the plan fine-tuned from more seeds than the checkpoint's (``seeds`` in the recipe)
    spread: Spread | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": self.FORMAT,
            "task": self.task,
            "test": dict(self.test),
            "base_test": dict(self.base_test),
            "merge_relative_error": self.merge_relative_error,
            "latency_card": self.latency_card.to_dict(),
        }
        if self.samples is not None:
            data["samples"] = dataclasses.asdict(self.samples)
        if self.frechet is not None:
            data["frechet"] = dataclasses.asdict(self.frechet)
        if self.spread is not None:
            data["spread"] = self.spread.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Evaluation:
        def build(d: dict[str, Any]) -> Evaluation:
            samples = d.get("samples")
            if samples is not None:  # version 1 kept the path of this machine's work directory
                samples = {**samples, "file": samples.get("file") or "samples.png"}
                samples = SampleGrid(**{k: samples[k] for k in ("file", "count", "sampler", "seed")})
            metric = TASK_METRIC[d["task"]]
            test, base_test = _metrics(d["test"], metric), _metrics(d["base_test"], metric)
            return cls(
                task=d["task"],
                test=test,
                base_test=base_test,
                merge_relative_error=float(d["merge_relative_error"]),
                latency_card=LatencyCard.from_dict(d["latency_card"]),
                samples=samples,
                frechet=Frechet(**d["frechet"]) if d.get("frechet") else None,
                spread=Spread.from_dict(d["spread"], metric) if d.get("spread") else None,
            )

        return _parsed("evaluation", cls.FORMAT, data, build)


@dataclass(frozen=True)
class OnnxExport(Record):
    """How an ONNX file was made and checked (``onnx.json``)."""

    FORMAT = "lmzoo.onnx-export/1"
    FILE_KIND = "ONNX export record"

    file: str
    opset: int
    dynamic_batch: bool
    #: every input's shape at batch 1 (an image; a DDPM UNet also takes a timestep per image)
    input_shapes: tuple[tuple[int, ...], ...]
    checked_batches: tuple[int, ...]
    #: the largest |onnxruntime - PyTorch| over the checked inputs, and relative to the output's scale
    max_abs_error: float
    relative_error: float
    tolerance: float
    provider: str
    versions: dict[str, str]

    def describe(self) -> str:
        """One sentence for a model card."""
        batch = "dynamic batch" if self.dynamic_batch else "batch 1"
        batches = " and ".join(str(b) for b in self.checked_batches)
        return (
            f"`{self.file}` (ONNX opset {self.opset}, {batch}) was run in onnxruntime "
            f"{self.versions.get('onnxruntime', '?')} ({self.provider}) on random inputs at batch {batches} "
            f"and matched the PyTorch output: largest difference {self.relative_error:.1e} of the output's "
            f"scale (tolerance {self.tolerance:g}); exported with torch {self.versions.get('torch', '?')}."
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["input_shapes"] = [list(s) for s in self.input_shapes]
        data["checked_batches"] = list(self.checked_batches)
        return {"format": self.FORMAT, **data}

    @classmethod
    def from_dict(cls, data: Any) -> OnnxExport:
        def build(d: dict[str, Any]) -> OnnxExport:
            return cls(
                file=str(d["file"]),
                opset=int(d["opset"]),
                dynamic_batch=bool(d["dynamic_batch"]),
                input_shapes=tuple(tuple(int(v) for v in s) for s in d["input_shapes"]),
                checked_batches=tuple(int(b) for b in d["checked_batches"]),
                max_abs_error=float(d["max_abs_error"]),
                relative_error=float(d["relative_error"]),
                tolerance=float(d["tolerance"]),
                provider=str(d["provider"]),
                versions={str(k): str(v) for k, v in d["versions"].items()},
            )

        return _parsed(cls.FILE_KIND, cls.FORMAT, data, build)
