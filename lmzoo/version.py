"""lmzoo's version, in one place: modules read it here instead of importing the package root."""

__version__ = "0.1.0.dev0"
