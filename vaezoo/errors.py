"""Every error vaezoo raises on purpose, in one hierarchy under VAEZooError; each names the bad value and the fix.

The CLI prints ``str(error)`` as one line and exits non-zero; a traceback is a bug.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class VAEZooError(Exception):
    """Base of every error vaezoo raises on purpose."""


class UnknownModelError(VAEZooError, KeyError):
    """A model name or pretrained tag that no installed plugin provides."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(VAEZooError, ValueError):
    """A config field that does not exist or holds a bad value."""


class PluginError(VAEZooError):
    """A plugin that fails to import, breaks the model contract, or claims a taken name."""


class PretrainedUnavailableError(VAEZooError):
    """Pretrained weights were asked for but none can be found."""


class CapabilityError(VAEZooError, NotImplementedError):
    """A variant was asked for something it does not provide (e.g. labels-free cvae sampling)."""


class DataError(VAEZooError, ValueError):
    """A dataset that is missing, empty, truncated, malformed or holds NaN/Inf."""


class InputError(VAEZooError, ValueError):
    """A tensor handed to a model has the wrong shape, dtype, values or labels."""


class StorageError(VAEZooError, OSError):
    """A file could not be written: the disk is full, a size limit was hit, or the folder is read-only."""


class CheckpointError(VAEZooError):
    """A checkpoint, weights file or model folder that is missing, truncated, corrupted or does not fit the model."""


class HubError(VAEZooError):
    """A push to or a download from the Hugging Face Hub that cannot be done, with the fix."""


class FolderInUseError(VAEZooError):
    """A run folder that another live process holds (two trainings into one --out would overwrite each other)."""


class TrainingDivergedError(VAEZooError):
    """The loss, the validation metrics or the weights became NaN or Inf during training."""


class ConformanceError(VAEZooError, AssertionError):
    """A variant fails one of :func:`vaezoo.testing.check_model`'s conformance checks."""


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ``" (did you mean 'a', 'b'?)"`` for the closest choices, or ``""`` when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.5)
    if not close:
        return ""
    return " (did you mean " + ", ".join(repr(c) for c in close) + "?)"


def one_line(text: object, limit: int | None = None) -> str:
    """``text`` with its line breaks and runs of blanks folded, for embedding another library's message in ours;
    cut to ``limit`` characters (ending in ``...``) when given.

    >>> one_line("bad   value  here", limit=12)
    'bad value...'
    """
    folded = " ".join(str(text).split())
    return folded if limit is None or len(folded) <= limit else folded[:limit - 3] + "..."
