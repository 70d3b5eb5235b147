"""Exceptions raised by lmzoo. Every message names the problem and, where there is one, the fix."""

from __future__ import annotations


class LmzooError(Exception):
    """Base class of every error lmzoo raises on purpose. Its message is one line: the text of an
    error it reports (a library's multi-line message) is joined onto it."""

    def __str__(self) -> str:
        return " ".join(line.strip() for line in super().__str__().splitlines() if line.strip())


class UnsupportedModelError(LmzooError, TypeError):
    """The model belongs to no registered adapter family, or uses a layer the family cannot merge."""


class InvalidInputError(LmzooError, ValueError):
    """An example input does not fit the model."""


class InvalidSpecError(LmzooError, ValueError):
    """A network spec is internally inconsistent."""


class InvalidPlanError(LmzooError, ValueError):
    """A plan does not tile the network, or holds a candidate the spec does not allow."""


class NotConfiguredError(LmzooError, TypeError):
    """`merge` was called on a model that `apply_plan` did not produce."""


class InvalidArgumentError(LmzooError, ValueError):
    """A function was called with arguments that do not make sense together (or an unknown name)."""


class InvalidTableError(LmzooError, ValueError):
    """A latency or importance table is malformed, incomplete, or belongs to another network."""


class InfeasibleBudgetError(LmzooError, ValueError):
    """No plan meets the latency budget. ``min_budget_ms`` and ``max_speedup`` say what is feasible."""

    def __init__(self, message: str, *, min_budget_ms: float, max_speedup: float) -> None:
        super().__init__(message)
        self.min_budget_ms = min_budget_ms
        self.max_speedup = max_speedup


class LatencyBackendUnavailable(LmzooError, RuntimeError):
    """A latency backend (or the device it needs) cannot run here; the message says what to install."""


class DataNotFoundError(LmzooError, FileNotFoundError):
    """A data set is not where lmzoo looked; the message lists the places and how to get it."""


class MergeTooLargeError(LmzooError, MemoryError):
    """A block would merge into a convolution too large to compute; the message names it and the limit."""


class ProfileBuildWarning(UserWarning):
    """A loaded checkpoint was built with a recipe profile other than the default (e.g. ``smoke``):
    it is not the zoo entry, and its weights and figures are not the entry's."""
