"""Hyper-parameter search with Optuna: ``recbole-moe tune`` and :func:`recbole_moe.tune`.

The search space is a file in RecBole's hyper-parameter format (or YAML), every trial is an
ordinary :func:`recbole_moe.run`, and the study lives in a database (an SQLite file by default,
any SQLAlchemy URL for several machines), so a killed study resumes and several workers share
one. See :mod:`recbole_moe.tuning.space`, :mod:`recbole_moe.tuning.study` and
:mod:`recbole_moe.tuning.report`.
"""

from recbole_moe.tuning.api import execute, format_summary, prepare, tune
from recbole_moe.tuning.cli import main
from recbole_moe.tuning.space import Param, Space, SpaceError, TuneError, load_space

__all__ = [
    "Param",
    "Space",
    "SpaceError",
    "TuneError",
    "execute",
    "format_summary",
    "load_space",
    "main",
    "prepare",
    "tune",
]
