"""Compatibility layer that lets RecBole 1.2.1 run on today's numpy, pandas and torch.

Applied once by ``import recbole_moe`` (:func:`apply`); every patch is idempotent and names the
RecBole file it works around. Nothing here imports ``recbole.quick_start`` (it imports ray).
"""

from __future__ import annotations

import functools
import os
import types
import warnings
from typing import Any

import numpy as np
import pandas as pd
import torch
from recbole.data.dataset import dataset as dataset_module
from recbole.trainer import trainer as trainer_module
from recbole.utils import FeatureType, set_color

_APPLIED = False

# numpy 2 removed these aliases. RecBole 1.2.1 uses ``np.float``/``np.bool``/``np.long`` in
# ``recbole/evaluator/metrics.py`` and ``recbole/model/layers.py``, and
# ``recbole/config/configurator.py::Config.compatibility_settings`` reads ``np.float_``,
# ``np.complex_`` and ``np.unicode_`` (AttributeError on numpy 2) to define the others.
NUMPY_ALIASES = {
    "float_": np.float64,
    "complex_": np.complex128,
    "unicode_": np.str_,
    "bool": np.bool_,
    "int": np.int_,
    "float": np.float64,
    "complex": np.complex128,
    "object": np.object_,
    "str": np.str_,
    "long": np.int_,
    "unicode": np.str_,
}


def patch_numpy() -> None:
    """Restore the numpy aliases RecBole 1.2.1 uses (``recbole/evaluator/metrics.py`` et al.)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, value in NUMPY_ALIASES.items():
            try:
                getattr(np, name)
            except AttributeError:
                setattr(np, name, value)


class _PandasWithSeqFill(types.ModuleType):
    """``pandas`` for ``recbole/data/dataset/dataset.py`` with a ``read_csv`` that fills seq cells.

    ``Dataset._load_feat`` calls ``df[field].fillna(value="", inplace=True)`` on ``token_seq`` /
    ``float_seq`` columns. Under pandas 3 copy-on-write that call changes nothing, so an empty
    cell stays NaN and ``_.split`` fails with ``'float' object has no attribute 'split'``.
    Columns are still named ``field:type`` right after ``read_csv``, so filling the ``*seq``
    columns here is exactly the fill RecBole intended, and nothing else changes.
    """

    def __init__(self, pandas_module: types.ModuleType) -> None:
        super().__init__("pandas")
        self._pandas = pandas_module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pandas, name)

    def read_csv(self, *args: Any, **kwargs: Any):
        df = self._pandas.read_csv(*args, **kwargs)
        for column in df.columns:
            if isinstance(column, str) and column.endswith("seq"):
                df[column] = df[column].fillna("")
        return df


def _fill_nan(self) -> None:
    """``Dataset._fill_nan`` (``recbole/data/dataset/dataset.py``) with assignments instead of
    ``feat[field].fillna(..., inplace=True)``, which pandas 3 silently ignores."""
    self.logger.debug(set_color("Filling nan", "green"))
    for feat_name in self.feat_name_list:
        feat = getattr(self, feat_name)
        for field in feat:
            ftype = self.field2type[field]
            if ftype == FeatureType.TOKEN:
                feat[field] = feat[field].fillna(value=0)
            elif ftype == FeatureType.FLOAT:
                feat[field] = feat[field].fillna(value=feat[field].mean())
            else:
                dtype = np.int64 if ftype == FeatureType.TOKEN_SEQ else np.float64
                feat[field] = feat[field].apply(
                    lambda x, dtype=dtype: np.array([], dtype=dtype) if isinstance(x, float) else x
                )


def _remap(self, remap_list) -> None:
    """``Dataset._remap`` (``recbole/data/dataset/dataset.py``) with per-row lengths.

    RecBole computes the split points of a ``token_seq`` column with
    ``feat[field].agg(len)``; pandas 3 applies ``len`` to the whole Series (one number), so the
    remapped ids are no longer split back into rows. ``map(len)`` is the per-row length
    RecBole meant.
    """
    if len(remap_list) == 0:
        return
    tokens, split_point = self._concat_remaped_tokens(remap_list)
    new_ids_list, mp = pd.factorize(tokens)
    new_ids_list = np.split(new_ids_list + 1, split_point)
    mp = np.array(["[PAD]"] + list(mp))
    token_id = {t: i for i, t in enumerate(mp)}

    for (feat, field, ftype), new_ids in zip(remap_list, new_ids_list, strict=False):
        if field not in self.field2id_token:
            self.field2id_token[field] = mp
            self.field2token_id[field] = token_id
        if ftype == FeatureType.TOKEN:
            feat[field] = new_ids
        elif ftype == FeatureType.TOKEN_SEQ:
            split_point = np.cumsum(feat[field].map(len).to_numpy())[:-1]
            feat[field] = pd.Series(np.split(new_ids, split_point), index=feat.index)


def patch_pandas() -> None:
    """Make RecBole's dataset fill missing values and remap ``token_seq`` under pandas 3."""
    if not isinstance(dataset_module.pd, _PandasWithSeqFill):
        dataset_module.pd = _PandasWithSeqFill(pd)
    dataset_module.Dataset._fill_nan = _fill_nan
    dataset_module.Dataset._remap = _remap


def load_recbole_checkpoint(path: str, map_location: Any = None) -> dict:
    """Load a checkpoint written by RecBole's trainer (or ours) on torch >= 2.6.

    RecBole stores its ``Config`` object and optimizer state in the checkpoint, which
    ``weights_only=True`` (the default since torch 2.6) refuses. Only checkpoint files that
    RecBole itself wrote go through here; ``torch.load`` keeps its safe default elsewhere.
    """
    return torch.load(path, map_location=map_location, weights_only=False)


class _TorchForRecBoleTrainer(types.ModuleType):
    """``torch`` as seen by ``recbole/trainer/trainer.py``: its ``torch.load`` only ever reads
    the trainer's own checkpoints (``resume_checkpoint`` and ``evaluate(load_best_model=True)``),
    so it loads them with :func:`load_recbole_checkpoint`."""

    def __init__(self, torch_module: types.ModuleType) -> None:
        super().__init__("torch")
        self._torch = torch_module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._torch, name)

    @staticmethod
    @functools.wraps(load_recbole_checkpoint)
    def load(f: Any, map_location: Any = None, **kwargs: Any):
        return load_recbole_checkpoint(f, map_location=map_location)


def patch_torch_load() -> None:
    """Let RecBole's trainer reload its checkpoints on torch >= 2.6 (``weights_only`` default)."""
    if not isinstance(trainer_module.torch, _TorchForRecBoleTrainer):
        trainer_module.torch = _TorchForRecBoleTrainer(torch)


def disable_sine_anomaly_mode() -> None:
    """``recbole/model/sequential_recommender/sine.py`` calls
    ``torch.autograd.set_detect_anomaly(True)`` at import time, and importing any of RecBole's
    sequential models imports it. Anomaly mode records a stack trace for every forward operation
    and checks every backward output for NaN, a large part of every model's training step.
    Import RecBole's sequential models once here and switch the mode back off
    (the trainer still stops on a non-finite loss)."""
    anomaly = torch.is_anomaly_enabled()
    # Imported here, between reading and restoring the mode: the import runs sine.py's code.
    import recbole.model.sequential_recommender  # noqa: F401

    torch.autograd.set_detect_anomaly(anomaly)


def thop_available() -> tuple[bool, str]:
    """Whether ``thop`` (RecBole's FLOPs counter) imports; it needs ``distutils``, which Python
    3.12 only has through setuptools' shim. Returns ``(ok, reason)``."""
    try:  # thop is optional for a run: imported only to probe it
        import setuptools  # noqa: F401  (installs the distutils shim on Python >= 3.12)
        import thop.profile  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the environment
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


def apply() -> None:
    """Apply every patch once (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    patch_numpy()
    patch_pandas()
    patch_torch_load()
    disable_sine_anomaly_mode()
    _APPLIED = True
