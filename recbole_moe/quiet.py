"""Keep RecBole's and torch's internal warnings off the terminal, in the run's log file instead.

RecBole 1.2.1 on today's torch and numpy triggers warnings a user can do nothing about: torch's
"The given NumPy array is not writable" (from ``recbole/data/dataset/dataset.py``) and the
deprecation of ``torch.cuda.amp.GradScaler(args...)`` (from ``recbole/trainer/trainer.py``),
among others. The command line installs :func:`internal_warnings_to_log`: a warning raised from
RecBole's own code, or one of :data:`INTERNAL_MESSAGES` from anywhere, goes to the log file of
the run in progress (none: it is dropped); every other warning is shown as usual.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Iterator

import recbole

#: (category, message pattern) of torch warnings about RecBole's use of torch.
INTERNAL_MESSAGES: tuple[tuple[type[Warning], re.Pattern[str]], ...] = (
    (UserWarning, re.compile(r"The given NumPy array is not writable")),
    (FutureWarning, re.compile(r"`torch\.cuda\.amp\.\w+\(args\.\.\.\)` is deprecated")),
    (UserWarning, re.compile(r"enable_nested_tensor is True, but self\.use_nested_tensor")),
)


def _recbole_dir() -> str | None:
    return os.path.dirname(os.path.abspath(recbole.__file__)) + os.sep


def is_internal(message: Warning | str, category: type[Warning], filename: str) -> bool:
    """Whether a warning comes from RecBole's internals (the user cannot act on it)."""
    recbole_dir = _recbole_dir()
    if recbole_dir and os.path.abspath(filename).startswith(recbole_dir):
        return True
    text = str(message)
    return any(
        issubclass(category, kind) and pattern.search(text) for kind, pattern in INTERNAL_MESSAGES
    )


def _to_log_files(text: str) -> None:
    """Write ``text`` as a WARNING record to the root logger's file handlers only."""
    record = logging.LogRecord("py.warnings", logging.WARNING, __file__, 0, text, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            try:
                handler.emit(record)
            except Exception:  # pragma: no cover - never fail a run over a warning
                pass


@contextlib.contextmanager
def internal_warnings_to_log() -> Iterator[None]:
    """Route internal warnings (see :func:`is_internal`) to the run's log file while active."""
    original = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if is_internal(message, category, filename):
            _to_log_files(
                f"{category.__name__} (not shown on the terminal): {message} [{filename}:{lineno}]"
            )
            return
        original(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
    try:
        yield
    finally:
        if warnings.showwarning is showwarning:
            warnings.showwarning = original


__all__ = ["INTERNAL_MESSAGES", "internal_warnings_to_log", "is_internal"]
