"""Model cards (README.md of a checkpoint) from a Jinja template with huggingface_hub's ModelCard,
ModelCardData and EvalResult: ``model-index`` metrics, and how every number was measured. Cards are
made from records (the recipe, the solve record, the evaluation), so a card can be regenerated from a
checkpoint directory alone, without building any network."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lmzoo.frechet import INCEPTION
from lmzoo.recipes import Recipe
from lmzoo.records import Evaluation, Frechet, SampleGrid, SolveRecord

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
    """What the dynamic program maximised (lmzoo.core.problem's objectives)."""
    importance, summed = IMPORTANCE_TEXT[task]
    if objective == "sum":
        return f"The program maximised the sum of the blocks' importances {importance}, as the paper does."
    return (
        f"The program maximised the product of the blocks' importances {importance}, i.e. their {summed}, "
        "which, unlike the paper's sum of I, does not reward plans for having more blocks."
    )


def _description(recipe: Recipe) -> str:
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


def model_card(
    *, name: str, recipe: Recipe, evaluation: Evaluation, solve: SolveRecord, frontier: bool = False
) -> str:
    """The README.md text of a zoo entry."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    card = evaluation.latency_card
    m = card.measurement
    dataset = recipe.data.dataset
    device_name = m.device_name or m.device
    config = f"{m.backend}, {device_name}, batch {m.batch_size}, {m.dtype}"
    task_type, key, label, row_label, fmt = TASK_METRICS[evaluation.task]
    value, base_value = evaluation.test[key], evaluation.base_test[key]
    rows = [(row_label, fmt.format(base_value), fmt.format(value))]

    def result(metric_type: str, metric_name: str, metric_value: float, **more: Any) -> EvalResult:
        return EvalResult(
            task_type=task_type,
            dataset_type=DATASET_IDS.get(dataset, dataset),
            dataset_name=DATASET_NAMES.get(dataset, f"{dataset} {Path(recipe.data.root or '').name}".strip()),
            metric_type=metric_type,
            metric_name=metric_name,
            metric_value=metric_value,
            **more,
        )

    results = [result(key, label, round(value, 6), dataset_split="test")]
    frechet = evaluation.frechet
    if frechet:
        row_label, metric_type, metric_name = _frechet_labels(frechet)
        rows.append((row_label, *_frechet_cells(frechet)))
        sampling = f"{frechet.feature_model}, {frechet.samples} samples, {frechet.sampler}"
        results.append(
            result(
                metric_type,
                metric_name,
                round(frechet.merged, 4),
                dataset_split="test",
                metric_config=sampling,
            )
        )
    base_ms, merged_ms = card.base.median_ms, card.merged.median_ms
    rows.append(("latency (median ms)", f"{base_ms:.4g}", f"{merged_ms:.4g}"))
    results.append(
        result("speedup", "measured speed-up over the base", round(card.speedup, 4), metric_config=config)
    )
    data = ModelCardData(
        model_name=name,
        license=recipe.license,
        library_name="lmzoo",
        tags=["layermerge", "depth-compression", "pruning", "arxiv:2406.12837"],
        base_model=recipe.model.pretrained.removeprefix("hf-hub:") if recipe.model.pretrained else None,
        datasets=[DATASET_IDS[dataset]] if dataset in DATASET_IDS else None,  # a user's images: no Hub id
        eval_results=results,
    )
    base = recipe.model.architecture.display_name
    text = ModelCard.from_template(
        data,
        template_str=TEMPLATE,
        name=name,
        description=_description(recipe),
        base=base,
        metric_rows=rows,
        speedup=card.speedup,
        target=f"{solve.target_speedup:g}",
        predicted=_predicted_text(solve),
        backend=m.backend,
        device_name=device_name,
        batch=m.batch_size,
        dtype=m.dtype,
        threads=m.threads,
        runs=m.runs,
        torch=m.versions.get("torch", "?"),  # the torch the timing ran on, not this one
        date=m.date,
        plan_summary=solve.plan.summary().describe(),
        frontier=frontier,
        samples=_samples_line(evaluation.samples),
        frechet_line=_frechet_line(frechet),
        repo_id=f"{recipe.hub.org}/{name}" if recipe.hub.org else None,
        profile_flag="" if recipe.profile == "default" else f" --profile {recipe.profile}",
        intro=_intro(recipe.solve.method, base, recipe.solve.objective, evaluation.task),
    ).content
    return str(text)


def _frechet_labels(frechet: Frechet) -> tuple[str, str, str]:
    """(table row label, model-index metric type, metric name): FID proper or classifier features."""
    if frechet.feature_model == INCEPTION:
        return f"FID ({frechet.samples} samples)", "fid", "FID (Inception-v3, pytorch-fid weights)"
    return (
        f"Fréchet distance, {frechet.feature_model} features",
        "frechet_distance",
        "Fréchet distance in lmzoo classifier features (not Inception FID)",
    )


def _frechet_cells(frechet: Frechet) -> tuple[str, str]:
    return f"{frechet.base:.3f}", f"{frechet.merged:.3f}"


def _frechet_line(frechet: Frechet | None) -> str | None:
    if not frechet:
        return None
    if frechet.feature_model == INCEPTION:
        return (
            f"FID compares {frechet.samples} generated images ({frechet.sampler}) with "
            f"{frechet.reference} in Inception-v3 pool3 features (pytorch-fid's weights, 8-bit images "
            "resized to 299 px). Published DDPM FIDs use 50,000 samples; fewer samples read higher."
        )
    return (
        f"The Fréchet distance compares {frechet.samples} generated images ({frechet.sampler}) with "
        f"{frechet.reference} in the penultimate features of the zoo classifier "
        f"`{frechet.feature_model}`. It is not Inception FID: it compares models measured the same way."
    )


def _samples_line(samples: SampleGrid | None) -> str | None:
    if not samples:
        return None
    return f"{samples.count} samples each, {samples.sampler}, noise seed {samples.seed}"


def card_from_checkpoint(directory: str | os.PathLike[str]) -> str:
    """Regenerate the README.md card of a built checkpoint directory from what it holds (config,
    recipe, solve record, evaluation; its frontier plot when ``frontier.png`` is there)."""
    from lmzoo.checkpoint import CheckpointError, read_config
    from lmzoo.recipes import parse_recipe
    from lmzoo.records import RecordError

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
        evaluation = Evaluation.load(directory / "evaluation.json")
        solve = SolveRecord.load(directory / "plan.json")
    except RecordError as err:
        raise CheckpointError(str(err)) from None
    recipe = recipe.with_method(solve.method)  # baselines
    return model_card(
        name=config["name"],
        recipe=recipe,
        evaluation=evaluation,
        solve=solve,
        frontier=(directory / "frontier.png").is_file(),
    )


def _predicted_text(solve: SolveRecord) -> str:
    """The card's "the table predicted ..." figure, saying when the target was out of reach."""
    predicted = solve.predicted_speedup
    if not predicted:
        return "n/a"
    if solve.unreachable_max_speedup is not None:
        return f"{predicted:.2f}× for its fastest plan: the target was beyond the latency table"
    return f"{predicted:.2f}×"
