"""Results across entries: one CSV row per built entry and per base network (``cards/results.csv``),
and the frontier plot of metric against measured speed-up for every method on one architecture and
data set. Rows are made from each checkpoint's records."""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Any

from lmzoo.cards import TASK_METRICS, better_direction
from lmzoo.checkpoint import architecture, read_config
from lmzoo.errors import InvalidArgumentError, LmzooError
from lmzoo.files import read_text
from lmzoo.recipes import DEFAULT_PROFILE
from lmzoo.records import Evaluation, Frechet, SolveRecord

#: columns every results CSV row has (``cards/results.csv``)
RESULT_COLUMNS = (
    "model",
    "arch",
    "dataset",
    "method",
    "target_speedup",
    "measured_speedup",
    "metric",
    "value",
)
#: every column :func:`results_rows` writes: how each number was measured, next to it
RESULT_FIELDS = (
    *RESULT_COLUMNS[:4],
    "profile",
    "objective",
    *RESULT_COLUMNS[4:6],
    "predicted_speedup",
    "backend",
    "device",
    "batch",
    "dtype",
    "threads",
    "base_ms",
    "merged_ms",
    *RESULT_COLUMNS[6:],
    "value_mean",
    "value_sd",
    "seeds",
    "base_value",
    "frechet",
    "base_frechet",
    "frechet_features",
    "depth",
    "convs_kept",
    "base_weights_sha256",
    "date",
    "lmzoo_version",
)


def results_rows(directories: list[Path]) -> list[dict[str, Any]]:
    """One row per built checkpoint directory (model, method, target / predicted / measured
    speed-up, the latency setting, the test metric), plus one ``base`` row per base network (its
    weights' digest, where the config records it) and latency setting (speed-up 1, its test metric).
    Directories without an evaluation are skipped."""
    rows: list[dict[str, Any]] = []
    bases: dict[tuple[Any, ...], dict[str, Any]] = {}
    for directory in sorted(directories):
        files = [directory / n for n in ("config.json", "evaluation.json", "plan.json", "recipe.yaml")]
        if not all(f.is_file() for f in files):
            continue
        try:
            config = read_config(directory)
            evaluation, solve = Evaluation.load(files[1]), SolveRecord.load(files[2])
        except LmzooError as err:
            warnings.warn(f"{directory} is left out of the results: {err}", stacklevel=2)
            continue
        dataset = _recipe_dataset(files[3])
        card = evaluation.latency_card
        m = card.measurement
        _, key, label, _, _ = TASK_METRICS[evaluation.task]
        summary = solve.plan.summary()
        setting = {
            "arch": architecture(config).display_name,
            "dataset": dataset,
            # a build of another recipe profile (smoke) is not the zoo entry: its own rows and base
            "profile": config.get("profile", DEFAULT_PROFILE),
            "backend": m.backend,
            "device": m.device_name or m.device,
            "batch": m.batch_size,
            "dtype": m.dtype,
            "threads": m.threads,
            "metric": label,
            "base_weights_sha256": config.get("base_weights_sha256"),
        }
        frechet = evaluation.frechet
        # what the entry's row and its base's row share: the base as measured with this entry
        shared = {
            **setting,
            "base_ms": _round(card.base.median_ms),
            "base_value": _round(evaluation.base_test[key]),
            "frechet_features": _feature_model(frechet) if frechet else None,
            "date": m.date,
            "lmzoo_version": config.get("lmzoo_version", ""),
        }
        rows.append(
            {
                **shared,
                "model": config.get("name", directory.name),
                "method": solve.method,
                "objective": solve.objective,
                "target_speedup": config.get("target_speedup"),
                "predicted_speedup": _round(solve.predicted_speedup),
                "measured_speedup": _round(card.speedup),
                "merged_ms": _round(card.merged.median_ms),
                "value": _round(evaluation.test[key]),
                **_spread_columns(evaluation, key),
                "frechet": _round(frechet.merged if frechet else None),
                "base_frechet": _round(frechet.base if frechet else None),
                "depth": summary.depth,
                "convs_kept": summary.convs_kept,
            }
        )
        bases.setdefault(
            tuple(setting.values()),
            {
                **shared,
                "model": f"{setting['arch']} (base)",
                "method": "base",
                "target_speedup": 1,
                "predicted_speedup": 1,
                "measured_speedup": 1,
                "value": shared["base_value"],
                "frechet": _round(frechet.base if frechet else None),
                "depth": summary.units,
                "convs_kept": summary.units,
            },
        )
    return list(bases.values()) + rows


def _spread_columns(evaluation: Evaluation, metric: str) -> dict[str, Any]:
    """Mean and sample standard deviation of the metric over the entry's fine-tunes (one seed: the
    value itself, no deviation)."""
    spread = evaluation.spread
    if spread is None:
        return {"value_mean": _round(evaluation.test[metric]), "value_sd": None, "seeds": 1}
    return {
        "value_mean": _round(spread.mean(metric)),
        "value_sd": _round(spread.sd(metric)),
        "seeds": len(spread.seeds),
    }


def write_results(rows: list[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def merge_results(previous: list[dict[str, Any]], current: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``previous`` rows (a results CSV as read) with each row of the same model, data set and profile
    replaced by its ``current`` row, in place; ``current``'s other rows follow. Rows of entries that
    are not in ``current`` (built or published elsewhere) are kept as they were."""

    def key(row: dict[str, Any]) -> tuple[str, str, str]:
        return (str(row["model"]), str(row.get("dataset") or ""), str(row.get("profile") or DEFAULT_PROFILE))

    fresh = {key(r): r for r in current}
    merged = [fresh.pop(key(r), r) for r in previous]
    return merged + [r for r in current if key(r) in fresh]


def _feature_model(frechet: Frechet) -> str:
    """ "inception" (FID) or the classifier, with its weights' digest when recorded: distances in
    two classifiers' features do not compare, even under one name."""
    digest = frechet.feature_weights_short
    return f"{frechet.feature_model}@sha256:{digest}" if digest else frechet.feature_model


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _recipe_dataset(path: Path) -> str:
    import yaml

    try:
        recipe = yaml.safe_load(read_text(path, what="recipe", error=LmzooError))
    except (LmzooError, yaml.YAMLError):
        return ""
    return str(recipe.get("data", {}).get("dataset", "")) if isinstance(recipe, dict) else ""


def read_results(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as err:
        raise InvalidArgumentError(f"cannot read the results file {path}: {err.strerror}") from None
    missing = [c for c in RESULT_COLUMNS if rows and c not in rows[0]]
    if missing:
        raise InvalidArgumentError(f"{path} lacks the columns {', '.join(missing)}")
    return rows


def frontier_series(
    rows: list[dict[str, Any]],
) -> dict[tuple[str, str], tuple[str, list[tuple[float, float, float]]]]:
    """The frontier plot's lines: (method, objective) -> (legend label, points (measured speed-up,
    metric, its standard deviation over seeds: 0 for one seed) sorted by speed-up). The metric is the
    mean over the entry's seeds where it has several. The objective enters the label only when the
    rows mix objectives."""
    objectives = {r.get("objective") or "sum" for r in rows if r["method"] != "base"}
    series: dict[tuple[str, str], tuple[str, list[tuple[float, float, float]]]] = {}
    for r in rows:
        objective = "" if r["method"] == "base" else (r.get("objective") or "sum")
        label = r["method"] if len(objectives) < 2 or not objective else f"{r['method']}, {objective} of I"
        point = (
            float(r["measured_speedup"]),
            float(r.get("value_mean") or r["value"]),
            float(r.get("value_sd") or 0),
        )
        series.setdefault((r["method"], objective), (label, []))[1].append(point)
    return {key: (label, sorted(points)) for key, (label, points) in sorted(series.items())}


def plot_frontier(
    rows: list[dict[str, Any]],
    path: str | os.PathLike[str],
    *,
    entry: str | None = None,
    group: tuple[str, str] | None = None,
    profile: str | None = None,
) -> bool:
    """Metric against measured speed-up for every method on one architecture and data set (the base
    model marked): the ``entry``'s (circled), or ``group`` = (arch, dataset) of recipe ``profile``
    (default: the default profile's builds). False when the results hold nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = next((r for r in rows if r["model"] == entry), None)
    if mine is not None:
        group = (mine["arch"], mine["dataset"])
    if group is None:
        return False
    if mine is not None:
        profile = mine.get("profile")
    same = [
        r
        for r in rows
        if (r["arch"], r["dataset"]) == group
        and (r.get("profile") or DEFAULT_PROFILE) == (profile or DEFAULT_PROFILE)
    ]
    metric = mine["metric"] if mine is not None else next((r["metric"] for r in same), None)
    same = [r for r in same if r["metric"] == metric]
    if not any(r["method"] != "base" for r in same):
        return False
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    styles = {
        "layermerge": ("#2f6fbf", "o"),
        "depth": ("#d9822b", "s"),
        "layer": ("#7a7a7a", "^"),
        "layermerge-union": ("#2a9d4b", "D"),
    }
    for (method, objective), (label, points) in frontier_series(same).items():
        if method == "base":
            for x, y, _ in points:
                ax.scatter([x], [y], marker="*", s=140, color="black", label="base", zorder=3)
            continue
        color, marker = styles.get(method, ("#444444", "d"))
        line = "--" if objective == "sum" and label != method else "-"
        xs, ys, sds = ([p[i] for p in points] for i in range(3))
        ax.plot(xs, ys, line, marker=marker, color=color, label=label)
        if any(sds):  # mean ± sd over the entries' fine-tuning seeds
            ax.errorbar(xs, ys, yerr=sds, fmt="none", ecolor=color, capsize=3, linewidth=1)
    if mine is not None:
        ax.scatter(
            [float(mine["measured_speedup"])],
            [float(mine.get("value_mean") or mine["value"])],
            s=220,
            facecolors="none",
            edgecolors="red",
            zorder=4,
            label=entry,
        )
    setting = same[-1]
    ax.set_xlabel(
        f"measured speed-up over the base ({setting.get('backend', '?')}, {setting.get('device', '?')}, "
        f"batch {setting.get('batch', '?')})",
        fontsize=8,
    )
    ax.set_ylabel(f"{metric}\n{better_direction(str(metric))} is better", fontsize=8)
    title = f"{group[0]} on {group[1]}"
    if profile not in (None, DEFAULT_PROFILE):
        title += f" ({profile} profile builds)"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
