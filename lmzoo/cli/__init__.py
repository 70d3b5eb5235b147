"""The ``lmzoo`` command line (DESIGN §9). Data goes to stdout, logs and progress to stderr; a user
error is one line and exit status 1 (2 for usage errors, as click does). Commands import torch only
when they run, so ``lmzoo --help`` and ``lmzoo list`` start fast.

    engine_commands.py   inspect, solve, bench
    build_commands.py    build, tables
    zoo_commands.py      list, info, show, results, card, export, publish
    options.py           the options and error handling the commands share
"""

from __future__ import annotations

import click

from lmzoo.cli.build_commands import build, tables
from lmzoo.cli.engine_commands import bench, inspect, solve
from lmzoo.cli.zoo_commands import card, export, info, list_command, publish, results, show


@click.group()
@click.version_option(package_name="lmzoo")
def main() -> None:
    """lmzoo: depth-compressed CNNs with LayerMerge."""


for command in (
    inspect,
    solve,
    bench,
    build,
    list_command,
    info,
    show,
    results,
    card,
    export,
    publish,
    tables,
):
    main.add_command(command)

__all__ = ["main"]
