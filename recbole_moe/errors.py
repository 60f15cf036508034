"""Exceptions raised for bad input, each with a message a user can act on."""

from __future__ import annotations


class RecBoleMoeError(Exception):
    """Base class: the command-line tools print these without a traceback and exit non-zero."""


class ConfigError(RecBoleMoeError, ValueError):
    """A configuration value that is missing, malformed or out of range."""


class UnknownModelError(ConfigError):
    """A model name that neither recbole-moe nor RecBole defines."""


class DatasetNotFoundError(RecBoleMoeError, FileNotFoundError):
    """A dataset whose atomic files are not where the configuration points."""


class CheckpointMismatchError(RecBoleMoeError, ValueError):
    """A checkpoint made by another model, on other data or with other settings than the
    current run."""


class MissingPackageError(ConfigError):
    """A model that needs an optional package which is not installed."""
