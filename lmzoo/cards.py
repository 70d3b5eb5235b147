"""Model cards (README.md of a checkpoint) from a Jinja template with huggingface_hub's ModelCard,
ModelCardData and EvalResult: ``model-index`` metrics, and how every number was measured. Cards are
made from records (the recipe, the solve record, the evaluation), so a card can be regenerated from a
checkpoint directory alone, without building any network."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lmzoo.frechet import INCEPTION
from lmzoo.latency.card import LatencyCard
from lmzoo.preprocessing import Preprocessing
from lmzoo.recipes import DEFAULT_PROFILE, Recipe, zoo_entry_name
from lmzoo.records import TASK_METRIC, Evaluation, Frechet, OnnxExport, SampleGrid, SolveRecord

PAPER = "https://arxiv.org/abs/2406.12837"
DATASET_IDS = {
    "fashion-mnist": "zalando-datasets/fashion_mnist",
    "cifar10": "uoft-cs/cifar10",
    "imagenet": "ILSVRC/imagenet-1k",
}
DATASET_NAMES = {"fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "imagenet": "ImageNet-1k"}

#: task -> (Hub task type, metric key in the evaluation and model-index, metric name, table row, format)
TASK_METRICS = {
    "classification": (
        "image-classification",
        TASK_METRIC["classification"],
        "top-1 accuracy (%)",
        "top-1 (%), test",
        "{:.2f}",
    ),
    "denoising": (
        "unconditional-image-generation",
        TASK_METRIC["denoising"],
        "denoising loss (noise-prediction MSE)",
        "denoising loss, test",
        "{:.5f}",
    ),
}

TEMPLATE = """---
{{ card_data }}
---

# {{ name }}
{% if profile_note %}
> {{ profile_note }}
{% endif %}
{{ description }}

{{ intro }}

## Results

| | base | merged |
|---|---|---|
{% for row in metric_rows %}| {{ row[0] }} | {{ row[1] }} | {{ row[2] }} |
{% endfor %}

Speed-up **{{ '%.2f' % speedup }}×** (target {{ target }}×; the table predicted {{ predicted }}),
measured with `{{ backend }}` on {{ device_name }}, batch {{ batch }}, {{ dtype }}, {{ runs }} runs,
base and merged timed interleaved, base in deploy form (norms folded); torch {{ torch }}, {{ date }}.
Details in `latency.json`.

## Plan

{{ plan_summary }}

![per-block latency of the base and the merged network, measured the same way](latency.png)
{% if frontier %}
![{{ frontier_alt }}](frontier.png)
{% endif %}{% if samples %}
![samples of the base (left) and the merged network (right) from the same noise](samples.png)

{{ samples }}.
{% endif %}{% if frechet_line %}
{{ frechet_line }}
{% endif %}{% if preprocessing %}
## Preprocessing

{{ preprocessing }}.
{% endif %}
## Use

```python
{{ use_code }}
```

{{ use_note }}
{% if onnx %}
`{{ onnx_file }}` holds the same network in ONNX: {{ onnx }}
{% endif %}
## Rebuild

lmzoo is installed from a clone of its repository (it is not on PyPI): `pip install -e .` in the
clone, then

```bash
lmzoo build {{ rebuild_name }}{{ profile_flag }}
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


def better_direction(metric: str) -> str:
    """ "lower" for losses and distances, "higher" for accuracies (the y axis of a frontier plot)."""
    lower = ("loss", "fid", "fréchet", "frechet", "distance", "error")
    return "lower" if any(word in metric.lower() for word in lower) else "higher"


def _objective_text(objective: str, task: str) -> str:
    """What the dynamic program maximised (lmzoo.core.problem's objectives)."""
    importance, summed = IMPORTANCE_TEXT[task]
    if objective == "sum":
        return f"The program maximised the sum of the blocks' importances {importance}, as the paper does."
    if objective == "kept":
        return (
            "The program maximised, as the official layer-pruning code does, the sum over the kept "
            "removable convolutions of exp(drop / 100), the accuracy lost by removing each one alone: "
            "it keeps as many convolutions as fit the budget, the losses breaking near-ties."
        )
    if objective.startswith("normalized"):
        from lmzoo.core.problem import normalization_alpha

        return (
            "The program maximised, as the official depth-compression code (Kim et al. 2023) does, the "
            f"sum over the segments of log I less {normalization_alpha(objective):g} times the mean log I "
            "of the single-convolution entries."
        )
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
    paper = f"([Kim et al., ICML 2024]({PAPER}))"
    if method == "layermerge":
        text = (
            f"Built with lmzoo from `{base}` with LayerMerge {paper}: activation and convolution layers "
            "removed jointly, the remaining consecutive convolutions merged into single convolutions, "
            "chosen by an exact dynamic program under a latency budget."
        )
    elif method == "layermerge-union":
        text = (
            f"Built with lmzoo from `{base}` with an lmzoo extension of LayerMerge {paper}: its blocks "
            "together with layer pruning's, so a convolution may also be removed while the activations "
            "around it stay (the paper allows that only on DDPM upsampling convolutions); chosen by the "
            "same exact dynamic program under a latency budget, whose optimum by the tables is then no "
            "worse than either method's."
        )
    else:
        text = (
            f"A **baseline** built with lmzoo from `{base}` for comparison with LayerMerge {paper}: "
            f"{METHOD_TEXT[method]}, chosen by the same exact dynamic program under the same latency "
            "budget, tables and fine-tuning."
        )
    return f"{text} {_objective_text(objective, task)}"


def _use(
    name: str, repo_id: str | None, task: str, preprocessing: Preprocessing | None, pipeline: bool
) -> tuple[str, str]:
    """(the Use section's code, the note under it): loading, and the input pipeline or DDPM pipeline
    (``pipeline``: the checkpoint is a diffusers pipeline directory)."""
    hub = f'"hf-hub:{repo_id}"' if repo_id else None
    lines = [
        "import lmzoo",
        "",
        f'model = lmzoo.load("{name}")  # the local store ($LMZOO_HOME), then the Hub',
    ]
    if hub:
        lines.append(f"model = lmzoo.load({hub})  # this repository, or pin @<commit sha>")
    note = (
        "The merged network is rebuilt from the base architecture and the plan in `config.json`, then "
        "its safetensors weights are loaded strictly; no pickles and no training code are involved."
    )
    if task == "denoising" and pipeline:
        lines += [
            "",
            "from diffusers import DDPMPipeline  # this checkpoint is a DDPM pipeline directory too",
        ]
        if repo_id:
            lines += [
                "from huggingface_hub import snapshot_download",
                "",
                f'pipeline = DDPMPipeline.from_pretrained(snapshot_download("{repo_id}"))',
            ]
        else:
            lines += ["", f'pipeline = DDPMPipeline.from_pretrained(lmzoo.store.entry_dir("{name}"))']
        lines.append("images = pipeline(batch_size=4, num_inference_steps=1000).images")
        note += (
            " `model_index.json` names the UNet class `lmzoo.LayerMergeUNet2DModel` and the training "
            "schedule's `DDPMScheduler`, so diffusers loads the directory once lmzoo is imported and runs "
            "no other code (diffusers takes components of other libraries only from modules the caller "
            "imported, and from local directories: hence the snapshot download)."
        )
    elif task == "denoising":
        lines += [
            "",
            "from diffusers import DDPMPipeline, DDPMScheduler",
            "",
            "scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02)",
            "images = DDPMPipeline(unet=model, scheduler=scheduler)(batch_size=4).images",
        ]
        note += " (This checkpoint predates DDPM pipeline directories; rebuild it for `from_pretrained`.)"
    elif preprocessing is not None and preprocessing.timm_reproduces:
        lines += [
            "",
            "import timm  # model.pretrained_cfg holds the preprocessing below",
            "",
            "transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))",
            "logits = model(transform(image).unsqueeze(0))  # image: a PIL image of the data set",
        ]
    return "\n".join(lines), note


def model_card(
    *,
    name: str,
    recipe: Recipe,
    evaluation: Evaluation,
    solve: SolveRecord,
    frontier: bool = False,
    preprocessing: Preprocessing | None = None,
    preprocessing_recorded: bool = True,
    onnx: OnnxExport | None = None,
    pipeline: bool = True,
) -> str:
    """The README.md text of a zoo entry (``preprocessing``: its data's, which the card states, as the
    checkpoint records it or, for an earlier checkpoint, as its recipe implies; ``onnx``: the record of
    an ONNX export next to it; ``pipeline``: a DDPM checkpoint is a diffusers pipeline directory)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    card = evaluation.latency_card
    m = card.measurement
    dataset = recipe.data.dataset
    device_name = m.device_name or m.device
    config = f"{m.backend}, {device_name}, batch {m.batch_size}, {m.dtype}"
    task_type, key, label, row_label, fmt = TASK_METRICS[evaluation.task]
    value, base_value = evaluation.test[key], evaluation.base_test[key]
    frontier_alt = (
        f"{label}, {better_direction(label)} is better, against measured speed-up: LayerMerge and "
        "the baselines"
    )
    rows = [(row_label, fmt.format(base_value), fmt.format(value))]
    spread = evaluation.spread
    if spread is not None:
        seeds = ", ".join(map(str, spread.seeds))
        rows.append(
            (
                f"{row_label}, mean ± sd of {len(spread.seeds)} fine-tunes (seeds {seeds}; this checkpoint: "
                f"seed {spread.seeds[0]})",
                "",
                f"{fmt.format(spread.mean(key))} ± {fmt.format(spread.sd(key))}",
            )
        )

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
        pipeline_tag=task_type,
        tags=["layermerge", "depth-compression", "pruning", "arxiv:2406.12837"],
        base_model=recipe.model.pretrained.removeprefix("hf-hub:") if recipe.model.pretrained else None,
        datasets=[DATASET_IDS[dataset]] if dataset in DATASET_IDS else None,  # a user's images: no Hub id
        eval_results=results,
    )
    base = recipe.model.architecture.display_name
    repo_id = f"{recipe.hub.org}/{name}" if recipe.hub.org else None
    recorded = preprocessing if preprocessing_recorded else None  # what load attaches to the model
    use_code, use_note = _use(name, repo_id, evaluation.task, recorded, pipeline)
    text = ModelCard.from_template(
        data,
        template_str=TEMPLATE,
        name=name,
        profile_note=_profile_note(recipe, solve),
        description=_description(recipe),
        base=base,
        metric_rows=rows,
        speedup=card.speedup,
        target=f"{solve.target_speedup:g}",
        predicted=_predicted_text(solve, card),
        backend=m.backend,
        device_name=device_name,
        batch=m.batch_size,
        dtype=m.dtype,
        runs=m.runs,
        torch=m.versions.get("torch", "?"),  # the torch the timing ran on, not this one
        date=m.date,
        plan_summary=solve.plan.summary().describe() + _refinement_text(solve),
        frontier=frontier,
        frontier_alt=frontier_alt,
        samples=_samples_line(evaluation.samples),
        frechet_line=_frechet_line(frechet),
        preprocessing=_preprocessing_text(preprocessing, evaluation.task, preprocessing_recorded),
        use_code=use_code,
        use_note=use_note,
        onnx=onnx.describe() if onnx else None,
        onnx_file=onnx.file if onnx else None,
        rebuild_name=zoo_entry_name(recipe.name, recipe.solve.method, solve.target_speedup),
        profile_flag="" if recipe.profile == DEFAULT_PROFILE else f" --profile {recipe.profile}",
        intro=_intro(recipe.solve.method, base, solve.objective, evaluation.task),
    ).content
    return str(text)


def _profile_note(recipe: Recipe, solve: SolveRecord) -> str | None:
    """The warning under the title of a build of another recipe profile than the default."""
    if recipe.profile == DEFAULT_PROFILE:
        return None
    entry = zoo_entry_name(recipe.name, recipe.solve.method, solve.target_speedup)
    return (
        f"**Not the zoo entry.** Built with the recipe's `{recipe.profile}` profile (its own data "
        f"limits, schedules and tables), so its weights and figures are not those of `{entry}`."
    )


def _preprocessing_text(preprocessing: Preprocessing | None, task: str, recorded: bool) -> str | None:
    if preprocessing is None:
        return None
    if recorded:
        text = f"Inputs as evaluated: {preprocessing.describe()}"
    else:
        text = (
            "This checkpoint predates recorded preprocessing; its recipe's, as lmzoo prepares that data "
            f"now: {preprocessing.describe()}"
        )
    if task == "classification" and preprocessing.label_names:
        shown = ", ".join(preprocessing.label_names[:12])
        more = (
            f", ... ({len(preprocessing.label_names)} classes)" if len(preprocessing.label_names) > 12 else ""
        )
        text += f". Classes in output order: {shown}{more}"
    if task == "classification" and preprocessing.timm_reproduces and recorded:
        text += (
            ". `lmzoo.load` sets it as the model's timm `pretrained_cfg`, so timm's "
            "`resolve_data_config` and `create_transform` rebuild it exactly"
        )
    return text


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
        f"`{frechet.feature_model}`{_weights_named(frechet)}. It is not Inception FID: it compares "
        "models measured the same way."
    )


def _weights_named(frechet: Frechet) -> str:
    """Which weights of the feature classifier (records written before lmzoo kept it do not say)."""
    digest = frechet.feature_weights_short
    if not digest:
        return ""
    return f" (weights sha256 `{digest}`; other weights under that name give other distances)"


def _samples_line(samples: SampleGrid | None) -> str | None:
    if not samples:
        return None
    return f"{samples.count} samples each, {samples.sampler}, noise seed {samples.seed}"


def card_from_checkpoint(directory: str | os.PathLike[str], *, frontier: bool | None = None) -> str:
    """Regenerate the README.md card of a built checkpoint directory from what it holds (config,
    recipe, solve record, evaluation, ONNX export record; ``frontier``: whether the card shows
    ``frontier.png``, by default when it is there)."""
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
    try:
        onnx = OnnxExport.load(directory / "onnx.json") if (directory / "onnx.json").is_file() else None
    except RecordError as err:
        raise CheckpointError(str(err)) from None
    return model_card(
        name=config.get("name", directory.name),
        recipe=recipe,
        evaluation=evaluation,
        solve=solve,
        frontier=(directory / "frontier.png").is_file() if frontier is None else frontier,
        preprocessing=_recorded_preprocessing(config, recipe),
        preprocessing_recorded=config.get("preprocessing") is not None,
        onnx=onnx,
        pipeline="weights" in config,
    )


def _recorded_preprocessing(config: dict[str, Any], recipe: Recipe) -> Preprocessing | None:
    """The checkpoint's preprocessing; for a checkpoint written before configs recorded it, its
    recipe's (the small data sets', which need no images to know)."""
    if config.get("preprocessing") is not None:
        return Preprocessing.from_dict(config["preprocessing"])
    from lmzoo.data import SMALL_DATASETS, small_preprocessing

    d = recipe.data
    if d.dataset not in SMALL_DATASETS:
        return None
    return small_preprocessing(d.dataset, d.normalize, d.pad_to)


def _refinement_text(solve: SolveRecord) -> str:
    """The card's sentence on a plan chosen by re-ranking the tables' best plans."""
    r = solve.refinement
    if r is None:
        return ""
    scores = ", ".join(f"#{int(c['rank'])} {c['score']:.4f}" for c in r.candidates)
    return (
        f" Chosen by re-ranking the {len(r.candidates)} most important distinct networks by the tables "
        f"with a short recovery of each whole network (importance on the held-out subset: {scores}): "
        f"rank {r.chosen_rank} is built."
    )


def _predicted_text(solve: SolveRecord, card: LatencyCard) -> str:
    """The card's "the table predicted ..." figure, saying when the target was out of reach and
    when the table was measured on another machine than the speed-up."""
    predicted = solve.predicted_speedup
    if not predicted:
        return "n/a"
    elsewhere = ""
    if card.foreign_table and card.predicted is not None:
        when = str(card.predicted.table.get("date", ""))[:10]
        elsewhere = f"; that table was measured on {card.foreign_table}" + (f" on {when}" if when else "")
    if solve.unreachable_max_speedup is not None:
        return f"{predicted:.2f}× for its fastest plan{elsewhere}: the target was beyond the latency table"
    return f"{predicted:.2f}×{elsewhere}"
