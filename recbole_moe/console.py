"""What a run shows on the terminal: a header, one line per epoch, the result and its warnings.

RecBole logs everything it knows at INFO level to the terminal and to the run's log file: the
config dump, the model, every epoch's loss, timing and metrics (about 220 lines for one epoch),
so a warning scrolls away at the top. Inside :func:`quiet_console` (the command line's default)
the terminal handlers that RecBole's ``init_logger`` creates show only records marked with
:func:`show` and warnings; the log file keeps everything. Each warning is shown when it happens
and once more, with all the others, when the command ends. Outside it (``recbole_moe.run``
called from Python, or ``--verbose``) nothing changes.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator

from recbole_moe.quiet import is_internal

#: The ``LogRecord`` attribute that marks an INFO record for the terminal.
CONSOLE_ATTR = "recbole_moe_console"


class ConsoleFilter(logging.Filter):
    """Lets through warnings (remembered for the closing block) and marked records."""

    def __init__(self, run_lines: bool = True) -> None:
        super().__init__()
        #: Whether the header and epoch lines are shown (``recbole-moe tune`` prints its own
        #: line per trial instead).
        self.run_lines = run_lines
        self.warnings: list[str] = []

    def remember(self, text: str) -> None:
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        if first and first not in self.warnings:
            self.warnings.append(first[:300])

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            self.remember(record.getMessage())
            return True
        return self.run_lines and bool(getattr(record, CONSOLE_ATTR, False))


_ACTIVE: ConsoleFilter | None = None


def show(logger: logging.Logger, message: str) -> None:
    """Log ``message`` at INFO level, shown on the terminal inside :func:`quiet_console`."""
    logger.info(message, extra={CONSOLE_ATTR: True})


def is_quiet() -> bool:
    return _ACTIVE is not None


def attach(logger: logging.Logger | None = None) -> None:
    """Filter the terminal handlers of ``logger`` (the root logger) while quiet; called right
    after RecBole's ``init_logger`` has created them."""
    if _ACTIVE is None:
        return
    for handler in (logger or logging.getLogger()).handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(
            handler, logging.FileHandler
        ):
            if _ACTIVE not in handler.filters:
                handler.addFilter(_ACTIVE)


def progress_bars(configured: bool) -> bool:
    """``show_progress`` as configured, except while quiet with the terminal's error stream
    redirected to a file (where each bar update would become a line)."""
    if _ACTIVE is not None and not sys.stderr.isatty():
        return False
    return bool(configured)


def closing_block(filter_: ConsoleFilter) -> str:
    """The warnings of the command, repeated in one block (empty when there were none)."""
    if not filter_.warnings:
        return ""
    lines = [f"warnings ({len(filter_.warnings)}, also in the log file):"]
    lines += [f"  - {text}" for text in filter_.warnings]
    return "\n".join(lines)


@contextlib.contextmanager
def quiet_console(verbose: bool = False, run_lines: bool = True) -> Iterator[ConsoleFilter]:
    """Keep the terminal to a header, one line per epoch and the warnings while active
    (``verbose``: RecBole's full output, as before). ``run_lines=False`` hides the header and
    epoch lines too. On exit the warnings are printed again in one block (stderr)."""
    global _ACTIVE
    filter_ = ConsoleFilter(run_lines=run_lines)
    if verbose:
        yield filter_
        return
    previous, original = _ACTIVE, warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if not is_internal(message, category, filename):
            filter_.remember(f"{category.__name__}: {message}")
        original(message, category, filename, lineno, file, line)

    _ACTIVE = filter_
    warnings.showwarning = showwarning
    try:
        yield filter_
    finally:
        _ACTIVE = previous
        if warnings.showwarning is showwarning:
            warnings.showwarning = original
        for handler in logging.getLogger().handlers:
            handler.removeFilter(filter_)
        block = closing_block(filter_)
        if block:
            print(block, file=sys.stderr)


__all__ = [
    "CONSOLE_ATTR",
    "ConsoleFilter",
    "attach",
    "closing_block",
    "is_quiet",
    "progress_bars",
    "quiet_console",
    "show",
]
