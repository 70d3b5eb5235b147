"""The build pipeline (DESIGN §8): ``lmzoo build RECIPE`` as stages, one file each.

stages.py       the stage list (one enum; ``--until`` offers exactly these)
workspace.py    the work directory: stage folders keyed by content, validated cached outputs
inputs.py       the base architecture, its task and the data sets (constructed once per build)
base.py  latency.py  importance.py  solve.py  finetune.py  merge.py  evaluate.py  card.py
                the stages, in order
generation.py   what evaluation adds for denoising networks (samples, Fréchet distance)
builder.py      the build: stages in order, each computed once (``Build``, ``build``)
"""

from typing import TYPE_CHECKING

from lmzoo.lazy import lazy_exports

_EXPORTS = {
    "lmzoo.pipeline.builder": ("Build", "build"),
    "lmzoo.pipeline.stages": ("STAGE_NAMES", "Stage"),
    "lmzoo.pipeline.workspace": ("Workspace", "content_key", "default_workdir"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(name for names in _EXPORTS.values() for name in names)

if TYPE_CHECKING:
    from lmzoo.pipeline.builder import Build, build
    from lmzoo.pipeline.stages import STAGE_NAMES, Stage
    from lmzoo.pipeline.workspace import Workspace, content_key, default_workdir
