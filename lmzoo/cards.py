"""Model cards (README.md of a checkpoint) from a Jinja template with huggingface_hub's ModelCard,
ModelCardData and EvalResult: ``model-index`` metrics, and how every number was measured."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from lmzoo.core.plan import Plan
from lmzoo.core.spec import Spec
from lmzoo.frechet import INCEPTION

PAPER = "https://arxiv.org/abs/2406.12837"
DATASET_IDS = {
    "fashion-mnist": "zalando-datasets/fashion_mnist",
    "cifar10": "uoft-cs/cifar10",
    "imagenet": "ILSVRC/imagenet-1k",
}
DATASET_NAMES = {"fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "imagenet": "ImageNet-1k"}

#: task -> (Hub task type, metric key in the evaluation and model-index, metric name, table row, format)
TASK_METRICS = {
    "classification": ("image-classification", "accuracy", "top-1 accuracy (%)", "top-1 (%), test", "{:.2f}"),
    "denoising": (
        "unconditional-image-generation",
        "loss",
        "denoising loss (noise-prediction MSE)",
        "denoising loss, test",
        "{:.5f}",
    ),
}

TEMPLATE = """---
{{ card_data }}
---

# {{ name }}

{{ description }}

{{ intro }}

## Results

| | base | merged |
|---|---|---|
{% for row in metric_rows %}| {{ row[0] }} | {{ row[1] }} | {{ row[2] }} |
{% endfor %}

Speed-up **{{ '%.2f' % speedup }}×** (target {{ target }}×; the table predicted {{ predicted }}),
measured with `{{ backend }}` on {{ device_name }}, batch {{ batch }}, {{ dtype }}, {{ threads }} threads,
{{ runs }} runs, base and merged timed interleaved, base in deploy form (norms folded); torch {{ torch }},
{{ date }}. Details in `latency.json`.

## Plan

{{ plan_summary }}

![per-block latency, base vs merged](latency.png)
{% if frontier %}
![accuracy against measured speed-up: LayerMerge and the baselines](frontier.png)
{% endif %}{% if samples %}
![samples of the base (left) and the merged network (right) from the same noise](samples.png)

{{ samples }}.
{% endif %}{% if frechet_line %}
{{ frechet_line }}
{% endif %}
## Use

```python
import lmzoo

model = lmzoo.load("{{ name }}")  # the local store ($LMZOO_HOME), then the Hub
{% if repo_id %}model = lmzoo.load("hf-hub:{{ repo_id }}")  # this repository, or pin @<commit sha>
{% endif %}```

The merged network is rebuilt from the `{{ base }}` architecture and the plan in `config.json`, then
`model.safetensors` is loaded strictly; no pickles and no training code are involved.

## Rebuild

```bash
pip install lmzoo
lmzoo build {{ name }}{{ profile_flag }}
```

`recipe.yaml` is the recipe it was built from; `tables/` holds the latency and importance tables the
plan was solved from, `plan.json` the solver's record and `evaluation.json` every measured figure.
"""


#: what each baseline method removes (the solver's restricted candidate sets, DESIGN §7)
METHOD_TEXT = {
    "depth": "depth compression (Kim et al., 2023): activation layers removed and the convolutions "
    "between them merged, no convolution pruned",
    "layer": "layer pruning: convolution layers removed, every activation layer kept",
}


#: the importance I of a block (lmzoo.importance) and what a sum of log I adds up, per task
IMPORTANCE_TEXT = {
    "classification": ("I = exp(Δ/100), Δ the change of held-out top-1", "summed accuracy change"),
    "denoising": (
        "I = exp(−ΔL/L), ΔL the change of the held-out denoising loss L",
        "summed relative loss change",
    ),
}


def _objective_text(objective: str, task: str) -> str:
    """What the dynamic program maximised (lmzoo.core.solver's objectives)."""
    importance, summed = IMPORTANCE_TEXT[task]
    if objective == "sum":
        return f"The program maximised the sum of the blocks' importances {importance}, as the paper does."
    return (
        f"The program maximised the product of the blocks' importances {importance}, i.e. their {summed}, "
        "which, unlike the paper's sum of I, does not reward plans for having more blocks."
    )


def base_architecture(family: str, arch: str | None) -> str:
    """The base network's name in cards and results: timm's arch, or the diffusers class."""
    return arch or {"diffusers-unet2d": "UNet2DModel"}.get(family, family)


def _description(recipe: Any) -> str:
    """The recipe's own description, which speaks of LayerMerge; another method's card quotes it."""
    if recipe.solve.method == "layermerge" or not recipe.description:
        return str(recipe.description or "")
    return f"From the recipe `{recipe.name}`, written for LayerMerge: *{recipe.description}*"


def _intro(method: str, base: str, objective: str, task: str) -> str:
    lmzoo = "[lmzoo](https://github.com/lmzoo/lmzoo)"
    paper = f"([Kim et al., ICML 2024]({PAPER}))"
    if method == "layermerge":
        text = (
            f"Built with {lmzoo} from `{base}` with LayerMerge {paper}: activation and convolution layers "
            "removed jointly, the remaining consecutive convolutions merged into single convolutions, "
            "chosen by an exact dynamic program under a latency budget."
        )
    elif method == "layermerge-union":
        text = (
            f"Built with {lmzoo} from `{base}` with an lmzoo extension of LayerMerge {paper}: its blocks "
            "together with layer pruning's, so a convolution may also be removed while the activations "
            "around it stay (the paper allows that only on DDPM upsampling convolutions); chosen by the "
            "same exact dynamic program under a latency budget, whose optimum by the tables is then no "
            "worse than either method's."
        )
    else:
        text = (
            f"A **baseline** built with {lmzoo} from `{base}` for comparison with LayerMerge {paper}: "
            f"{METHOD_TEXT[method]}, chosen by the same exact dynamic program under the same latency "
            "budget, tables and fine-tuning."
        )
    return f"{text} {_objective_text(objective, task)}"


def plan_summary(spec: Spec, plan: Plan) -> str:
    merged = [b for b in plan if b.kept]
    kernels = sorted({b.kernel for b in merged if len(b.kept) > 1})
    acts = len(plan.boundaries) - 1
    return (
        f"Depth {spec.length} → {len(merged)} convolutions; "
        f"{len(plan.kept_units)} of {spec.length} convs kept, "
        f"{acts} activation boundaries kept; merged kernel sizes {kernels or 'none'}."
    )


def model_card(
    *,
    name: str,
    recipe: Any,
    spec: Spec,
    plan: Plan,
    evaluation: dict[str, Any],
    target_speedup: float,
    solve_record: dict[str, Any],
    frontier: bool = False,
) -> str:
    """The README.md text of a zoo entry."""
    import torch
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    card = evaluation["latency_card"]
    m = card["measurement"]
    dataset = recipe.data.dataset
    config = f"{m['backend']}, {m.get('device_name', m['device'])}, batch {m['batch_size']}, {m['dtype']}"
    task_type, key, label, row_label, fmt = TASK_METRICS[evaluation["task"]]
    value, base_value = evaluation["test"][key], evaluation["base_test"][key]
    rows = [(row_label, fmt.format(base_value), fmt.format(value))]
    results = [
        EvalResult(
            task_type=task_type,
            dataset_type=DATASET_IDS[dataset],
            dataset_name=DATASET_NAMES[dataset],
            dataset_split="test",
            metric_type=key,
            metric_name=label,
            metric_value=round(value, 6),
        )
    ]
    frechet = evaluation.get("frechet")
    if frechet:
        row_label, metric_type, metric_name = _frechet_labels(frechet)
        rows.append((row_label, *_frechet_cells(frechet)))
        results.append(
            EvalResult(
                task_type=task_type,
                dataset_type=DATASET_IDS[dataset],
                dataset_name=DATASET_NAMES[dataset],
                dataset_split="test",
                metric_type=metric_type,
                metric_name=metric_name,
                metric_value=round(frechet["merged"], 4),
                metric_config=f"{frechet['feature_model']}, {frechet['samples']} samples, "
                f"{frechet['sampler']}",
            )
        )
    base_ms, merged_ms = card["base"]["median_ms"], card["merged"]["median_ms"]
    rows.append(("latency (median ms)", f"{base_ms:.4g}", f"{merged_ms:.4g}"))
    results.append(
        EvalResult(
            task_type=results[0].task_type,
            dataset_type=DATASET_IDS[dataset],
            dataset_name=DATASET_NAMES[dataset],
            metric_type="speedup",
            metric_name="measured speed-up over the base",
            metric_value=round(card["speedup"], 4),
            metric_config=config,
        )
    )
    data = ModelCardData(
        model_name=name,
        license=recipe.license,
        library_name="lmzoo",
        tags=["layermerge", "depth-compression", "pruning", "arxiv:2406.12837"],
        base_model=recipe.model.pretrained.removeprefix("hf-hub:") if recipe.model.pretrained else None,
        datasets=[DATASET_IDS[dataset]],
        eval_results=results,
    )
    base = base_architecture(recipe.model.family, recipe.model.arch)
    text = ModelCard.from_template(
        data,
        template_str=TEMPLATE,
        name=name,
        description=_description(recipe),
        base=base,
        metric_rows=rows,
        speedup=card["speedup"],
        target=f"{target_speedup:g}",
        predicted=_predicted_text(solve_record),
        backend=m["backend"],
        device_name=m.get("device_name", m["device"]),
        batch=m["batch_size"],
        dtype=m["dtype"],
        threads=m.get("threads"),
        runs=m.get("runs"),
        torch=torch.__version__,
        date=m.get("date", ""),
        plan_summary=plan_summary(spec, plan),
        frontier=frontier,
        samples=_samples_line(evaluation.get("samples")),
        frechet_line=_frechet_line(frechet),
        repo_id=f"{recipe.hub.org}/{name}" if recipe.hub.org else None,
        profile_flag="" if recipe.profile == "default" else f" --profile {recipe.profile}",
        intro=_intro(recipe.solve.method, base, recipe.solve.objective, evaluation["task"]),
    ).content
    return str(text)


def _frechet_labels(frechet: dict[str, Any]) -> tuple[str, str, str]:
    """(table row label, model-index metric type, metric name): FID proper or classifier features."""
    if frechet["feature_model"] == INCEPTION:
        return f"FID ({frechet['samples']} samples)", "fid", "FID (Inception-v3, pytorch-fid weights)"
    return (
        f"Fréchet distance, {frechet['feature_model']} features",
        "frechet_distance",
        "Fréchet distance in lmzoo classifier features (not Inception FID)",
    )


def _frechet_cells(frechet: dict[str, Any]) -> tuple[str, str]:
    return f"{frechet['base']:.3f}", f"{frechet['merged']:.3f}"


def _frechet_line(frechet: dict[str, Any] | None) -> str | None:
    if not frechet:
        return None
    if frechet["feature_model"] == INCEPTION:
        return (
            f"FID compares {frechet['samples']} generated images ({frechet['sampler']}) with "
            f"{frechet['reference']} in Inception-v3 pool3 features (pytorch-fid's weights, 8-bit images "
            "resized to 299 px). Published DDPM FIDs use 50,000 samples; fewer samples read higher."
        )
    return (
        f"The Fréchet distance compares {frechet['samples']} generated images ({frechet['sampler']}) with "
        f"{frechet['reference']} in the penultimate features of the zoo classifier "
        f"`{frechet['feature_model']}`. It is not Inception FID: it compares models measured the same way."
    )


def _samples_line(samples: dict[str, Any] | None) -> str | None:
    if not samples:
        return None
    return f"{samples['count']} samples each, {samples['sampler']}, noise seed {samples['seed']}"


def card_from_checkpoint(
    directory: str | os.PathLike[str], *, results: str | os.PathLike[str] | None = None
) -> str:
    """Regenerate the README.md card of a built checkpoint directory from what it holds (config,
    recipe, plan, evaluation); with ``results`` (a results CSV) also draw ``frontier.png``."""
    from lmzoo.checkpoint import CheckpointError, build_base, example_inputs, read_config
    from lmzoo.engine import trace
    from lmzoo.recipes import parse_recipe

    directory = Path(directory)
    config = read_config(directory)
    needed = ("recipe.yaml", "evaluation.json", "plan.json")
    missing = [f for f in needed if not (directory / f).is_file()]
    if missing:
        raise CheckpointError(
            f"{directory} lacks {', '.join(missing)}, which the card is made from; rebuild it with "
            f"`lmzoo build {config.get('name', directory.name)}`"
        )
    recipe = parse_recipe(directory / "recipe.yaml", config.get("profile"))
    try:
        evaluation = json.loads((directory / "evaluation.json").read_text())
        solve_record = json.loads((directory / "plan.json").read_text())
    except ValueError as err:
        raise CheckpointError(f"{directory}: evaluation.json or plan.json is not JSON ({err})") from None
    recipe = recipe.with_method(solve_record.get("method", recipe.solve.method))  # baselines
    spec = trace(build_base(config), example_inputs(config))
    frontier = False
    if results is not None:
        frontier = plot_frontier(read_results(results), directory / "frontier.png", entry=config["name"])
    return model_card(
        name=config["name"],
        recipe=recipe,
        spec=spec,
        plan=Plan.from_dict(config["plan"]),
        evaluation=evaluation,
        target_speedup=float(config["target_speedup"]),
        solve_record=solve_record,
        frontier=frontier or (directory / "frontier.png").is_file(),
    )


def _predicted_text(solve_record: dict[str, Any]) -> str:
    """The card's "the table predicted ..." figure, saying when the target was out of reach."""
    predicted = predicted_speedup(solve_record)
    if not predicted:
        return "n/a"
    if solve_record.get("unreachable"):
        return f"{predicted:.2f}× for its fastest plan: the target was beyond the latency table"
    return f"{predicted:.2f}×"


def predicted_speedup(solve_record: dict[str, Any]) -> float | None:
    predicted, merged = solve_record.get("predicted_base_ms"), solve_record.get("predicted_ms")
    return predicted / merged if predicted and merged else None


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
    "base_value",
    "frechet",
    "base_frechet",
    "frechet_features",
    "depth",
    "convs_kept",
    "date",
    "lmzoo_version",
)


def results_rows(directories: list[Path]) -> list[dict[str, Any]]:
    """One row per built checkpoint directory (model, method, target / predicted / measured
    speed-up, the latency setting, the test metric), plus one ``base`` row per base network and
    latency setting (speed-up 1, its test metric). Directories without an evaluation are skipped."""
    rows: list[dict[str, Any]] = []
    bases: dict[tuple[Any, ...], dict[str, Any]] = {}
    for directory in sorted(directories):
        files = [directory / n for n in ("config.json", "evaluation.json", "plan.json", "recipe.yaml")]
        if not all(f.is_file() for f in files):
            continue
        config, evaluation, solve_record = (json.loads(f.read_text()) for f in files[:3])
        dataset = _recipe_dataset(files[3])
        card = evaluation["latency_card"]
        m = card["measurement"]
        _, key, label, _, _ = TASK_METRICS[evaluation["task"]]
        plan = Plan.from_dict(config["plan"])
        setting = {
            "arch": base_architecture(config["base"]["family"], config["base"]["arch"]),
            "dataset": dataset,
            "backend": m["backend"],
            "device": m.get("device_name", m["device"]),
            "batch": m["batch_size"],
            "dtype": m["dtype"],
            "threads": m.get("threads"),
            "metric": label,
        }
        frechet = evaluation.get("frechet", {})
        # what the entry's row and its base's row share: the base as measured with this entry
        shared = {
            **setting,
            "base_ms": _round(card["base"]["median_ms"]),
            "base_value": _round(evaluation["base_test"][key]),
            "frechet_features": frechet.get("feature_model"),  # "inception" (FID) or a zoo classifier
            "date": m.get("date", ""),
            "lmzoo_version": config.get("lmzoo_version", ""),
        }
        rows.append(
            {
                **shared,
                "model": config["name"],
                "method": solve_record.get("method", "layermerge"),
                "objective": solve_record.get("objective", "sum"),
                "target_speedup": config.get("target_speedup"),
                "predicted_speedup": _round(predicted_speedup(solve_record)),
                "measured_speedup": _round(card["speedup"]),
                "merged_ms": _round(card["merged"]["median_ms"]),
                "value": _round(evaluation["test"][key]),
                "frechet": _round(frechet.get("merged")),
                "base_frechet": _round(frechet.get("base")),
                "depth": sum(1 for b in plan if b.kept),
                "convs_kept": len(plan.kept_units),
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
                "frechet": _round(frechet.get("base")),
                "depth": plan.length,
                "convs_kept": plan.length,
            },
        )
    return list(bases.values()) + rows


def write_results(rows: list[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _recipe_dataset(path: Path) -> str:
    import yaml

    recipe = yaml.safe_load(path.read_text())
    return str(recipe.get("data", {}).get("dataset", "")) if isinstance(recipe, dict) else ""


def read_results(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    from lmzoo.errors import InvalidArgumentError

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
) -> dict[tuple[str, str], tuple[str, list[tuple[float, float]]]]:
    """The frontier plot's lines: (method, objective) -> (legend label, points sorted by measured
    speed-up). The objective enters the label only when the rows mix objectives."""
    objectives = {r.get("objective") or "sum" for r in rows if r["method"] != "base"}
    series: dict[tuple[str, str], tuple[str, list[tuple[float, float]]]] = {}
    for r in rows:
        objective = "" if r["method"] == "base" else (r.get("objective") or "sum")
        label = r["method"] if len(objectives) < 2 or not objective else f"{r['method']}, {objective} of I"
        point = (float(r["measured_speedup"]), float(r["value"]))
        series.setdefault((r["method"], objective), (label, []))[1].append(point)
    return {key: (label, sorted(points)) for key, (label, points) in sorted(series.items())}


def plot_frontier(
    rows: list[dict[str, Any]],
    path: str | os.PathLike[str],
    *,
    entry: str | None = None,
    group: tuple[str, str] | None = None,
) -> bool:
    """Metric against measured speed-up for every method on one architecture and data set (the base
    model marked): the ``entry``'s (circled), or ``group`` = (arch, dataset). False when the results
    hold nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = next((r for r in rows if r["model"] == entry), None)
    if mine is not None:
        group = (mine["arch"], mine["dataset"])
    if group is None:
        return False
    same = [r for r in rows if (r["arch"], r["dataset"]) == group]
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
            for x, y in points:
                ax.scatter([x], [y], marker="*", s=140, color="black", label="base", zorder=3)
            continue
        color, marker = styles.get(method, ("#444444", "d"))
        line = "--" if objective == "sum" and label != method else "-"
        ax.plot([x for x, _ in points], [y for _, y in points], line, marker=marker, color=color, label=label)
    if mine is not None:
        ax.scatter(
            [float(mine["measured_speedup"])],
            [float(mine["value"])],
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
    ax.set_ylabel(str(metric))
    ax.set_title(f"{group[0]} on {group[1]}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
