"""Compatibility layer that lets RecBole 1.2.1 run on today's numpy, pandas and torch.

Applied once by ``import recbole_moe`` (:func:`apply`); every patch is idempotent and names the
RecBole file it works around. Nothing here imports ``recbole.quick_start`` (it imports ray).
"""

from __future__ import annotations

import builtins
import functools
import importlib
import importlib.util
import os
import types
import warnings
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse
import torch
from recbole.data.dataset import dataset as dataset_module
from recbole.data.dataset import sequential_dataset as sequential_dataset_module
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


_RECBOLE_BENCHMARK_PRESETS = sequential_dataset_module.SequentialDataset._benchmark_presets


def _benchmark_presets(self) -> None:
    """``SequentialDataset._benchmark_presets`` (``recbole/data/dataset/sequential_dataset.py``)
    with per-row history lengths.

    For pre-split files (``benchmark_filename``) RecBole sets ``item_length`` to
    ``inter_feat[item_id_list].agg(len)``; pandas 3 applies ``len`` to the whole Series, so
    every row gets the number of rows, and models read the last item at the wrong position
    without any error. ``map(len)`` is the per-row length RecBole meant.
    """
    _RECBOLE_BENCHMARK_PRESETS(self)
    lists = self.inter_feat[self.item_id_list_field]
    self.inter_feat[self.item_list_length_field] = lists.map(len)


def patch_benchmark_lengths() -> None:
    """Give pre-split sequential data (``benchmark_filename``) its real history lengths."""
    sequential_dataset_module.SequentialDataset._benchmark_presets = _benchmark_presets


def patch_pandas() -> None:
    """Make RecBole's dataset fill missing values and remap ``token_seq`` under pandas 3."""
    if not isinstance(dataset_module.pd, _PandasWithSeqFill):
        dataset_module.pd = _PandasWithSeqFill(pd)
    dataset_module.Dataset._fill_nan = _fill_nan
    dataset_module.Dataset._remap = _remap


class _DokMatrixWithUpdate(scipy.sparse.dok_matrix):
    """``scipy.sparse.dok_matrix`` with the private ``_update(dict)`` RecBole's graph models call.

    Up to SciPy 1.12 ``_update`` was ``dict.update`` on the entries (the public ``update``
    raised ``NotImplementedError``). SciPy 1.13 removed ``_update`` (``AttributeError:
    'dok_matrix' object has no attribute '_update'``) and made ``update`` store the same keys
    and values, after checking every index.
    """

    def _update(self, data: dict) -> None:
        self.update(data)


class _SciPySparseWithDokUpdate(types.ModuleType):
    """``scipy.sparse`` as seen by RecBole's graph models: :class:`_DokMatrixWithUpdate` as
    ``dok_matrix``, everything else SciPy's."""

    def __init__(self, sparse_module: types.ModuleType) -> None:
        super().__init__("scipy.sparse")
        self._sparse = sparse_module
        self.dok_matrix = _DokMatrixWithUpdate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sparse, name)


#: Modules whose normalized adjacency (or Laplacian) construction calls ``dok_matrix._update``:
#: ``get_norm_adj_mat`` of LightGCN, NGCF, NCL and GCMC, ``get_laplacian_matrix`` of
#: SpectralCF, ``get_norm_inter_matrix`` of KGIN and MCCLK.
DOK_UPDATE_MODULES = (
    "recbole.model.general_recommender.lightgcn",
    "recbole.model.general_recommender.ngcf",
    "recbole.model.general_recommender.ncl",
    "recbole.model.general_recommender.gcmc",
    "recbole.model.general_recommender.spectralcf",
    "recbole.model.knowledge_aware_recommender.kgin",
    "recbole.model.knowledge_aware_recommender.mcclk",
)


def patch_scipy_dok_update() -> None:
    """Give RecBole's graph models (:data:`DOK_UPDATE_MODULES`) a ``dok_matrix`` with the
    ``_update`` that SciPy 1.13 removed, so they build their adjacency matrices again."""
    if hasattr(scipy.sparse.dok_matrix, "_update"):
        return  # SciPy < 1.13: RecBole's code runs as written
    for name in DOK_UPDATE_MODULES:
        module = importlib.import_module(name)
        if not isinstance(module.sp, _SciPySparseWithDokUpdate):
            module.sp = _SciPySparseWithDokUpdate(scipy.sparse)


# -- torch_scatter for KGIN and MCCLK ----------------------------------------------------------
def _broadcast_index(index: torch.Tensor, src: torch.Tensor, dim: int) -> torch.Tensor:
    """A 1-D ``index`` along ``dim`` of ``src``, expanded to ``src``'s shape."""
    shape = [1] * src.dim()
    shape[dim] = -1
    return index.view(shape).expand_as(src)


def scatter_sum(
    src: torch.Tensor, index: torch.Tensor, dim: int = -1, dim_size: int | None = None
) -> torch.Tensor:
    """``torch_scatter.scatter_sum`` for a 1-D ``index`` along ``dim``:
    ``out[..., j, ...] = sum of src[..., i, ...] over i with index[i] == j``."""
    dim = dim % src.dim()
    size = list(src.shape)
    size[dim] = int(index.max()) + 1 if dim_size is None else dim_size
    out = src.new_zeros(size)
    return out.scatter_add(dim, _broadcast_index(index, src, dim), src)


def scatter_mean(
    src: torch.Tensor, index: torch.Tensor, dim: int = -1, dim_size: int | None = None
) -> torch.Tensor:
    """``torch_scatter.scatter_mean`` for a 1-D ``index``: the sum over each group divided by
    its size (empty groups stay 0)."""
    total = scatter_sum(src, index, dim, dim_size)
    count = scatter_sum(torch.ones_like(src), index, dim, total.shape[dim % src.dim()])
    return total / count.clamp(min=1)


def scatter_softmax(src: torch.Tensor, index: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``torch_scatter.scatter_softmax`` for a 1-D ``index``: a softmax over each group of
    entries along ``dim`` that share an index."""
    dim = dim % src.dim()
    full_index = _broadcast_index(index, src, dim)
    size = list(src.shape)
    size[dim] = int(index.max()) + 1
    group_max = src.new_zeros(size).scatter_reduce(
        dim, full_index, src.detach(), reduce="amax", include_self=False
    )
    exp = (src - group_max.gather(dim, full_index)).exp()
    return exp / scatter_sum(exp, index, dim, size[dim]).gather(dim, full_index)


#: What KGIN and MCCLK import from ``torch_scatter`` (``recbole/model/knowledge_aware_recommender/
#: kgin.py`` and ``mcclk.py``, inside ``Aggregator.forward``).
TORCH_SCATTER_STAND_IN = types.ModuleType(
    "torch_scatter", "torch_scatter's scatter_sum/mean/softmax on torch's own scatter operations."
)
TORCH_SCATTER_STAND_IN.scatter_sum = scatter_sum
TORCH_SCATTER_STAND_IN.scatter_mean = scatter_mean
TORCH_SCATTER_STAND_IN.scatter_softmax = scatter_softmax


def _import_torch_scatter_or_stand_in(name, globals=None, locals=None, fromlist=(), level=0):
    """``__import__`` that answers ``torch_scatter`` with :data:`TORCH_SCATTER_STAND_IN`
    when the package is not installed."""
    if name == "torch_scatter" and level == 0 and not torch_scatter_installed():
        return TORCH_SCATTER_STAND_IN
    return builtins.__import__(name, globals, locals, fromlist, level)


@functools.cache
def torch_scatter_installed() -> bool:
    """Whether the ``torch_scatter`` package is importable."""
    return importlib.util.find_spec("torch_scatter") is not None


def _with_torch_scatter_stand_in(function: types.FunctionType) -> types.FunctionType:
    """``function`` whose ``import torch_scatter`` statements fall back to the stand-in.

    Only this function's imports change (its builtins' ``__import__``), so no other code sees
    a ``torch_scatter`` module that is not installed.
    """
    scope = dict(function.__globals__)
    scope["__builtins__"] = {**vars(builtins), "__import__": _import_torch_scatter_or_stand_in}
    patched = types.FunctionType(
        function.__code__, scope, function.__name__, function.__defaults__, function.__closure__
    )
    patched.__wrapped_recbole__ = function
    return functools.update_wrapper(patched, function)


#: Modules whose ``Aggregator.forward`` imports ``torch_scatter``.
TORCH_SCATTER_MODULES = (
    "recbole.model.knowledge_aware_recommender.kgin",
    "recbole.model.knowledge_aware_recommender.mcclk",
)


def patch_torch_scatter() -> None:
    """Let KGIN and MCCLK run without ``torch_scatter``: it has no wheels on PyPI (its builds
    for each torch version are published elsewhere) and compiling it needs a C++ toolchain;
    the three functions RecBole uses are a few lines on ``Tensor.scatter_add`` and
    ``Tensor.scatter_reduce``. An installed ``torch_scatter`` is used as before."""
    for name in TORCH_SCATTER_MODULES:
        aggregator = importlib.import_module(name).Aggregator
        if not hasattr(aggregator.forward, "__wrapped_recbole__"):
            aggregator.forward = _with_torch_scatter_stand_in(aggregator.forward)


_RECBOLE_GET_PRELOAD_WEIGHT = dataset_module.Dataset.get_preload_weight


def _get_preload_weight_float32(self, field):
    """``Dataset.get_preload_weight`` as float32, the dtype of every model's parameters."""
    return _RECBOLE_GET_PRELOAD_WEIGHT(self, field).astype(np.float32, copy=False)


def patch_preload_weight_dtype() -> None:
    """``Dataset._preload_weight_matrix`` (``recbole/data/dataset/dataset.py``) fills
    ``np.zeros`` (float64) matrices, and KSR (``recbole/model/sequential_recommender/ksr.py``)
    keeps its relation matrix as that float64 tensor and multiplies it with float32
    activations: ``RuntimeError: expected m1 and m2 to have the same dtype``. Serve the
    pre-loaded weights as float32 (GRU4RecKG and KSR copy them into float32 embeddings)."""
    dataset_module.Dataset.get_preload_weight = _get_preload_weight_float32


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
    patch_benchmark_lengths()
    patch_torch_load()
    patch_scipy_dok_update()
    patch_torch_scatter()
    patch_preload_weight_dtype()
    disable_sine_anomaly_mode()
    _APPLIED = True
