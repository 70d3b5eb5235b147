"""Latency and importance tables as files: the core's tables (``lmzoo.core.tables``) plus ``save`` and
``load`` (one JSON file, written atomically, read with size and format checks). These are the classes
``lmzoo.LatencyTable`` / ``lmzoo.ImportanceTable`` name; the solver takes either."""

from __future__ import annotations

from lmzoo.core import tables as core
from lmzoo.errors import InvalidTableError
from lmzoo.files import JsonFile


class LatencyTable(JsonFile, core.LatencyTable):
    __doc__ = core.LatencyTable.__doc__
    FILE_KIND = "latency table"
    FILE_ERROR = InvalidTableError


class ImportanceTable(JsonFile, core.ImportanceTable):
    __doc__ = core.ImportanceTable.__doc__
    FILE_KIND = "importance table"
    FILE_ERROR = InvalidTableError


__all__ = ["ImportanceTable", "LatencyTable"]
