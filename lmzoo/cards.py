"""Model cards (README.md of a checkpoint) from a Jinja template with huggingface_hub's ModelCard,
ModelCardData and EvalResult: ``model-index`` metrics, and how every number was measured."""

from __future__ import annotations

from typing import Any

from lmzoo.core.plan import Plan
from lmzoo.core.spec import Spec

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

Built with [lmzoo](https://github.com/lmzoo/lmzoo) from `{{ base }}` with LayerMerge
([Kim et al., ICML 2024]({{ paper }})): activation and convolution layers removed jointly, the remaining
consecutive convolutions merged into single convolutions, chosen by an exact dynamic program under a
latency budget.

## Results

| | base | merged |
|---|---|---|
{% for row in metric_rows %}| {{ row[0] }} | {{ row[1] }} | {{ row[2] }} |
{% endfor %}
| latency (median ms) | {{ '%.4g' % base_ms }} | {{ '%.4g' % merged_ms }} |

Speed-up **{{ '%.2f' % speedup }}×** (target {{ target }}×; the table predicted {{ predicted }}),
measured with `{{ backend }}` on {{ device_name }}, batch {{ batch }}, {{ dtype }}, {{ threads }} threads,
{{ runs }} runs, base and merged timed interleaved, base in deploy form (norms folded); torch {{ torch }},
{{ date }}. Details in `latency.json`.

## Plan

{{ plan_summary }}

## Use

```python
import lmzoo
model = lmzoo.load("{{ name }}")
```

## Rebuild

```bash
lmzoo build {{ name }}
```
"""


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
    predicted_speedup: float | None,
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
        tags=["layermerge", "depth-compression", "pruning"],
        datasets=[DATASET_IDS[dataset]],
        eval_results=results,
    )
    base = recipe.model.arch or "UNet2DModel"
    text = ModelCard.from_template(
        data,
        template_str=TEMPLATE,
        name=name,
        description=recipe.description,
        base=base,
        paper=PAPER,
        metric_rows=rows,
        base_ms=card["base"]["median_ms"],
        merged_ms=card["merged"]["median_ms"],
        speedup=card["speedup"],
        target=f"{target_speedup:g}",
        predicted=f"{predicted_speedup:.2f}×" if predicted_speedup else "n/a",
        backend=m["backend"],
        device_name=m.get("device_name", m["device"]),
        batch=m["batch_size"],
        dtype=m["dtype"],
        threads=m.get("threads"),
        runs=m.get("runs"),
        torch=torch.__version__,
        date=m.get("date", ""),
        plan_summary=plan_summary(spec, plan),
    ).content
    return str(text)
