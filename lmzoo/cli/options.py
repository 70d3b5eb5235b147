"""What the commands share: one-line user errors, and the click options several commands take
(their defaults are the library's, declared once where the library declares them)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from lmzoo.latency.setting import BACKENDS, DTYPES, LatencySetting

F = TypeVar("F", bound=Callable[..., Any])
_LATENCY = LatencySetting()


def user_errors(func: F) -> F:
    """Turn lmzoo errors into one clean line on stderr and exit status 1, as click's own errors do
    (usage errors keep status 2); no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from lmzoo.errors import LmzooError

        try:
            return func(*args, **kwargs)
        except LmzooError as err:
            raise click.ClickException(str(err)) from None

    return wrapper  # type: ignore[return-value]


def _stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


def choice(flag: str, choices: Sequence[str], default: str | None, help: str) -> Callable[[F], F]:
    """An option taking one of ``choices`` (its default shown in --help when there is one)."""
    return click.option(
        flag, type=click.Choice(choices), default=default, show_default=default is not None, help=help
    )


json_output = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")

quiet_option = click.option(
    "--quiet", "-q", is_flag=True, help="No progress bars (the log lines and results still print)."
)

recipe_options = _stack(
    click.option(
        "--profile", default=None, help="Recipe profile, e.g. smoke [default: the recipe's default]."
    ),
    click.option(
        "--workdir",
        type=click.Path(file_okay=False),
        default=None,
        help="Stage cache [default: $LMZOO_WORKDIR].",
    ),
    click.option("--device", default="cpu", show_default=True, help="Device for training and evaluation."),
    quiet_option,
)

model_options = _stack(
    click.option(
        "--source", default="timm", show_default=True, help="Where MODEL_NAME comes from (lmzoo.sources)."
    ),
    click.option("--input-size", default=224, show_default=True, help="Square input resolution to trace at."),
    click.option("--in-chans", default=3, show_default=True, help="Input channels of the model."),
    click.option(
        "--num-classes", default=None, type=int, help="Classifier size (the source's default if omitted)."
    ),
)

latency_options = _stack(
    choice("--backend", BACKENDS, _LATENCY.backend, "Latency backend."),
    click.option("--device", default=_LATENCY.device, show_default=True, help="cpu, cuda or cuda:N."),
    click.option("--batch-size", default=_LATENCY.batch_size, show_default=True),
    choice("--dtype", DTYPES, _LATENCY.dtype, "Data type the networks are timed in."),
    click.option("--threads", type=int, default=None, help="CPU threads [default: torch's current setting]."),
    click.option("--runs", type=int, default=None, help="Timed runs per network [default: by device]."),
    click.option(
        "--rounds",
        default=_LATENCY.rounds,
        show_default=True,
        help="Alternating rounds (networks timed interleaved).",
    ),
)


def latency_setting(**options: Any) -> LatencySetting:
    """The LatencySetting of :data:`latency_options`' values."""
    return _LATENCY.replace(**options)
