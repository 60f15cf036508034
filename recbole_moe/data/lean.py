"""Lean sequential data path: each history stored once, training prefixes built per batch.

RecBole's ``SequentialDataset.data_augmentation`` materialises every training prefix as a row of
``[n_interactions, MAX_ITEM_LIST_LENGTH]`` per list field (``item_id_list`` as int64,
``timestamp_list`` as float32), and its loaders fetch batches index by index. At ML-20m size
(20M interactions, length 200) that is ~32 GB for ``item_id_list`` alone.

:class:`LeanSequentialDataset` keeps RecBole's loading, filtering, remapping, normalisation and
splitting code, and changes only what does not scale:

* the ``.inter`` file is read with pandas' C parser (RecBole uses the Python engine);
* the augmentation keeps the interactions once, sorted by (user, time) like RecBole, as flat
  arrays (CSR layout: each user's history is a contiguous slice; items in int32). Each
  augmented sample is one row of 1-D fields: the target interaction's fields, ``item_length``
  and the position of the target in the flat arrays, i.e. exactly RecBole's augmented rows
  without the list columns;
* ``__getitem__`` builds ``<field>_list`` for a batch from the flat arrays with one gather
  (``list[b, j] = seq[target_b - length_b + j]`` for ``j < length_b``, 0 after), so the
  batches are the ones RecBole's dataset returns for the same indices;
* the leave-one-out split is RecBole's, vectorised (same rows, same order);
* :class:`LeanTrainDataLoader` yields whole batches from one permutation (the same one
  RecBole's loader draws from the same generator), without a Python step per sample;
* optionally (``train_batch_order: length_grouped``) the training batches hold histories of
  similar length and are trimmed to their longest history, so the model does not compute on
  padding (same samples every epoch; the batches differ from RecBole's, see
  :class:`LeanTrainDataLoader`);
* full-sort evaluation of a padding-invariant model visits the users in order of history
  length, each batch trimmed to its longest history (``eval_batch_order: length_sorted``, the
  default; :class:`LeanFullSortEvalDataLoader`): the same scores per user, so the same metrics,
  with far less padding computed.

The loaders are RecBole's classes (``TrainDataLoader`` and ``FullSortEvalDataLoader``
subclasses), so RecBole's trainer, collector and evaluator run unchanged.

``data_path_mode`` (``auto|recbole|lean``) picks the path; ``auto`` takes the lean one when
:func:`estimate_recbole_bytes` exceeds ``lean_memory_threshold_gb`` and the settings are ones
the lean path supports (:func:`lean_unsupported_reason`).
"""

from __future__ import annotations

import os
from logging import getLogger

import numpy as np
import pandas as pd
import torch
from recbole.data.dataloader import FullSortEvalDataLoader, TrainDataLoader
from recbole.data.dataset import SequentialDataset
from recbole.data.interaction import Interaction
from recbole.data.transform import construct_transform
from recbole.data.utils import create_samplers, get_dataloader
from recbole.utils import FeatureSource, FeatureType, ModelType, set_color

from recbole_moe.data.atomic import check_interaction_file
from recbole_moe.data.seen import attach_seen_items, seen_problem
from recbole_moe.model import declared, plugin_models
from recbole_moe.objective import is_sequence

#: Name of the hidden 1-D field holding each sample's target position in the flat arrays.
TARGET_FIELD = "__lean_target__"
MODES = ("auto", "recbole", "lean")
DEFAULT_THRESHOLD_GB = 4.0
BATCH_ORDERS = ("random", "length_grouped")
EVAL_BATCH_ORDERS = ("length_sorted", "dataset")
#: RecBole's models whose scores at the read position ``item_length - 1`` do not depend on the
#: padding after it (causal or masked over right padding), so a batch may be cut to its longest
#: history; our models declare it on their class (``padding_invariant``,
#: :mod:`recbole_moe.model.declaration`). ``tests/test_lean.py`` checks each one's loss and
#: scores, trimmed vs full width.
RECBOLE_PADDING_INVARIANT_MODELS = ("SASRec", "GRU4Rec", "NARM")
#: RecBole's models whose full-sort scores alone do not depend on trailing padding, so full-sort
#: evaluation may use length-sorted, trimmed batches. BERT4Rec attends bidirectionally over
#: the non-padding keys only and appends its mask token after each history, dropping the first
#: column (``reconstruct_test_data``), at any width of at least the longest history; in the
#: prefix regime its training batches are masked (by RecBole) at random positions over the
#: width, so they are not trimmed there (under ``sequence`` its cloze loss trims its groups).
RECBOLE_SCORE_PADDING_INVARIANT_MODELS = (*RECBOLE_PADDING_INVARIANT_MODELS, "BERT4Rec")


def padding_invariant_models() -> list[str]:
    """Every available model whose loss and scores do not depend on trailing padding."""
    ours = [name for name in plugin_models() if declared(name).padding_invariant]
    return ours + list(RECBOLE_PADDING_INVARIANT_MODELS)


def is_padding_invariant(model: str) -> bool:
    """Whether ``model``'s loss and scores do not depend on trailing padding."""
    return model in RECBOLE_PADDING_INVARIANT_MODELS or declared(model).padding_invariant


def scores_padding_invariant(model: str) -> bool:
    """Whether ``model``'s full-sort scores do not depend on trailing padding."""
    return model in RECBOLE_SCORE_PADDING_INVARIANT_MODELS or is_padding_invariant(model)


# -- choosing the path -------------------------------------------------------------------------
def count_lines(path: str, chunk: int = 1 << 24) -> int:
    """Number of newline characters in ``path`` (read in binary chunks, constant memory)."""
    n = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                return n
            n += block.count(b"\n")


def _inter_columns(config) -> list[tuple[str, str]]:
    """``(field, type)`` of the ``.inter`` columns RecBole would load for ``config``."""
    path = os.path.join(config["data_path"], f"{config['dataset']}.inter")
    with open(path, encoding=config["encoding"]) as f:
        head = f.readline().rstrip("\r\n")
    load_col = (config["load_col"] or {}).get("inter") if config["load_col"] else None
    unload_col = (config["unload_col"] or {}).get("inter") if config["unload_col"] else None
    columns = []
    for field_type in head.split(config["field_separator"]):
        field, ftype = field_type.split(":")
        if load_col is not None and field not in load_col:
            continue
        if unload_col is not None and field in unload_col:
            continue
        columns.append((field, ftype))
    return columns


def estimate_recbole_bytes(n_rows: int, max_len: int, list_field_bytes: int) -> int:
    """Approximate peak bytes of RecBole's sequential path for ``n_rows`` interactions.

    The augmentation allocates ``[n_rows, max_len]`` per list field (``list_field_bytes`` =
    bytes of one element summed over the list fields, 8 for ``item_id_list``, 4 per float
    field), and the split copies it once more (``inter_feat[index]`` per part); the per-row
    Python slices and lists of the augmentation loop add ~150 bytes a row.
    """
    return int(n_rows) * (2 * int(max_len) * int(list_field_bytes) + 150)


def recbole_memory_estimate(config) -> int:
    """:func:`estimate_recbole_bytes` for ``config``'s dataset (counts the ``.inter`` lines)."""
    path = os.path.join(config["data_path"], f"{config['dataset']}.inter")
    n_rows = max(count_lines(path) - 1, 0)
    per_element = 0
    for field, ftype in _inter_columns(config):
        if field == config["USER_ID_FIELD"]:
            continue
        per_element += 4 if ftype.startswith("float") else 8
    return estimate_recbole_bytes(n_rows, config["MAX_ITEM_LIST_LENGTH"], per_element)


def lean_unsupported_reason(config) -> str | None:
    """Why the lean path cannot serve ``config`` (``None`` when it can)."""
    if config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
        return "the model is not sequential"
    if config["benchmark_filename"] is not None:
        return "benchmark_filename (pre-split files) is set"
    split = (config["eval_args"] or {}).get("split") or {}
    if list(split) != ["LS"]:
        return f"the split is {split} (the lean path implements leave-one-out 'LS')"
    if config["save_dataloaders"]:
        return "save_dataloaders is set"
    types = dict(_inter_columns(config))
    if any(t.endswith("seq") for t in types.values()):
        return "the .inter file has sequence-typed columns"
    return None


def train_batch_order(config) -> str:
    """``config``'s ``train_batch_order`` (``random`` when unset)."""
    return config["train_batch_order"] or "random"


def batch_order_problem(config) -> str | None:
    """Why ``config``'s ``train_batch_order`` cannot be used (``None`` when it can)."""
    order = train_batch_order(config)
    if order not in BATCH_ORDERS:
        return f"train_batch_order={order!r}: allowed values are {', '.join(BATCH_ORDERS)}"
    if order == "random":
        return None
    prefix = "train_batch_order='length_grouped'"
    if not is_padding_invariant(config["model"]):
        return (
            f"{prefix} trims batches to their longest history, which only models that "
            f"ignore trailing padding allow ({', '.join(padding_invariant_models())}); "
            f"model {config['model']} is not one of them"
        )
    if (config["data_path_mode"] or "auto") == "recbole":
        return f"{prefix} needs the lean data path; data_path_mode is 'recbole'"
    try:
        reason = lean_unsupported_reason(config)
    except (OSError, ValueError, UnicodeError):
        return None  # a missing or malformed dataset file is reported by the dataset checks
    if reason:
        return f"{prefix} needs the lean data path, which cannot be used: {reason}"
    return None


def eval_batch_order(config) -> str:
    """``config``'s ``eval_batch_order`` (``length_sorted`` when unset)."""
    return config["eval_batch_order"] or "length_sorted"


def eval_batch_order_problem(config) -> str | None:
    """Why ``config``'s ``eval_batch_order`` is not allowed (``None`` when it is)."""
    order = eval_batch_order(config)
    if order not in EVAL_BATCH_ORDERS:
        return f"eval_batch_order={order!r}: allowed values are {', '.join(EVAL_BATCH_ORDERS)}"
    return None


def sorts_evaluation(config) -> bool:
    """Whether the lean path's full-sort evaluation visits users by history length, with
    trimmed batches: ``eval_batch_order: length_sorted`` and a model of
    :func:`scores_padding_invariant` (for any other model the order and width stay
    RecBole's)."""
    return eval_batch_order(config) == "length_sorted" and scores_padding_invariant(config["model"])


def data_path_mode(config) -> str:
    """``recbole`` or ``lean``: the path ``config`` resolves to (see module docstring)."""
    mode = config["data_path_mode"] or "auto"
    if mode not in MODES:
        raise ValueError(f"data_path_mode must be one of {MODES}, got {mode!r}")
    if mode == "recbole":
        return "recbole"
    if is_sequence(config):
        reason = lean_unsupported_reason(config)
        if reason:
            raise ValueError(
                f"train_objective 'sequence' needs the lean data path, which "
                f"cannot be used: {reason}"
            )
        return "lean"
    if train_batch_order(config) != "random":
        problem = batch_order_problem(config)
        if problem:
            raise ValueError(problem)
        return "lean"
    if mode == "lean":
        reason = lean_unsupported_reason(config)
        if reason:
            raise ValueError(f"data_path_mode 'lean' cannot be used: {reason}")
        return "lean"
    threshold = config["lean_memory_threshold_gb"]
    threshold = DEFAULT_THRESHOLD_GB if threshold is None else float(threshold)
    try:
        if lean_unsupported_reason(config) is None:
            if recbole_memory_estimate(config) > threshold * 2**30:
                return "lean"
    except (OSError, ValueError, UnicodeError):
        pass  # an unreadable or malformed file: RecBole's path reports it with file and line
    return "recbole"


# -- dataset -----------------------------------------------------------------------------------
class LeanSequentialDataset(SequentialDataset):
    """RecBole's ``SequentialDataset`` with histories stored once and prefixes built per batch.

    Every public behaviour (fields, remapped ids, splits, ``__getitem__`` results) equals
    RecBole's for the settings :func:`lean_unsupported_reason` accepts.
    """

    def _load_feat(self, filepath, source):
        """RecBole's loader with pandas' C parser for files without sequence columns.

        Token columns that parse as integers are read as int64 (pandas' factorize then sees the
        same first-appearance order as for the strings); others are read as strings. Numeric
        tokens are thereby compared as numbers: ``007`` and ``7`` would be one id here.
        """
        load_col, unload_col = self._get_load_and_unload_col(source)
        if load_col == set():
            return None
        separator = self.config["field_separator"]
        encoding = self.config["encoding"]
        with open(filepath, encoding=encoding) as f:
            head = f.readline().rstrip("\r\n")
        fields = []
        for field_type in head.split(separator):
            field, ftype = field_type.split(":")
            if ftype.endswith("seq") or source == "link":
                return super()._load_feat(filepath, source)
            fields.append((field_type, field, FeatureType(ftype)))
        columns, usecols, dtype = [], [], {}
        for field_type, field, ftype in fields:
            if load_col is not None and field not in load_col:
                continue
            if unload_col is not None and field in unload_col:
                continue
            self.field2source[field] = source
            self.field2type[field] = ftype
            self.field2seqlen[field] = 1
            if ftype == FeatureType.FLOAT:
                self.field2bucketnum[field] = 2
            columns.append(field)
            usecols.append(field_type)
            dtype[field_type] = np.float64 if ftype == FeatureType.FLOAT else np.int64
        if not columns:
            self.logger.warning(f"No columns has been loaded from [{source}]")
            return None
        read = dict(delimiter=separator, usecols=usecols, encoding=encoding, engine="c")
        try:
            df = pd.read_csv(filepath, dtype=dtype, **read)
        except (ValueError, OverflowError):  # non-integer tokens or missing values
            dtype = {k: (v if v is np.float64 else str) for k, v in dtype.items()}
            df = pd.read_csv(filepath, dtype=dtype, **read)
        df = df[usecols]
        df.columns = columns
        return df

    def data_augmentation(self):
        """RecBole's augmentation pairs, without materialising the prefixes.

        After sorting by (user, time) exactly like RecBole, every interaction except each
        user's first is a target; its prefix is the ``item_length = min(i - start, L)``
        interactions before it. ``inter_feat`` becomes the target rows (RecBole's augmented
        rows minus the list fields) plus :data:`TARGET_FIELD`; the flat per-field arrays are
        kept in ``self._lean_seq``.
        """
        self.logger.debug("lean data_augmentation")
        self._aug_presets()
        self._check_field("uid_field", "time_field")
        max_len = self.config["MAX_ITEM_LIST_LENGTH"]
        self.sort(by=[self.uid_field, self.time_field], ascending=True)
        uid = self.inter_feat[self.uid_field].numpy()
        n = len(uid)
        is_start = np.ones(n, dtype=bool)
        is_start[1:] = uid[1:] != uid[:-1]
        starts = np.flatnonzero(is_start)
        # Position of every row within its user's history: i - start(user of i).
        run_start = np.repeat(starts, np.diff(np.append(starts, n)))
        target = np.flatnonzero(~is_start)
        length = np.minimum(target - run_start[target], max_len)

        seq = {}
        for field in self.inter_feat:
            if field == self.uid_field:
                continue
            value = self.inter_feat[field]
            if field == self.iid_field and value.numel() and int(value.max()) < 2**31:
                value = value.to(torch.int32)
            # A leading padding element: padded list positions gather index 0.
            seq[field] = torch.cat([torch.zeros(1, dtype=value.dtype), value])
        self._lean_seq = seq
        self._lean_max_len = max_len
        new_data = self.inter_feat[torch.from_numpy(target)]
        new_data.update(
            Interaction(
                {
                    self.item_list_length_field: torch.from_numpy(length.astype(np.int64)),
                    TARGET_FIELD: torch.from_numpy(target.astype(np.int64)),
                }
            )
        )
        self.inter_feat = new_data

    def _lean_lists(self, rows: dict, trim: bool = False) -> Interaction:
        """Target rows (field -> ``[B]`` tensor) -> RecBole's augmented rows with
        ``<field>_list`` (``[B, L]``): ``list[b, j] = seq[target_b - length_b + j]`` for
        ``j < length_b``, else 0 (the flat arrays hold a padding element at index 0, so
        ``seq[i]`` is stored at ``i + 1``). With ``trim`` the lists are ``[B, max(length)]``:
        RecBole's rows without the all-padding columns."""
        target = rows.pop(TARGET_FIELD)  # [B]
        length = rows[self.item_list_length_field]  # [B]
        width = self._lean_max_len
        if trim and len(length):
            width = max(int(length.max()), 1)
        index = self._list_index(target, length, width)  # [B, L]
        flat = index.view(-1)
        for field, value in self._lean_seq.items():
            gathered = torch.index_select(value, 0, flat).view(index.shape)  # [B, L]
            if field == self.iid_field:
                gathered = gathered.long()
            rows[getattr(self, f"{field}_list_field")] = gathered
        return Interaction(rows)

    @staticmethod
    def _list_index(
        target: torch.Tensor, length: torch.Tensor, width: int, shift: int = 0
    ) -> torch.Tensor:
        """Positions in the flat arrays of each row's history, ``[B, width]``: entry ``j`` is
        ``target - length + shift + j`` (stored at ``+ 1``) for ``j < length``, else 0 (the
        padding element)."""
        steps = torch.arange(width)  # [L]
        padded = steps >= length.unsqueeze(1)  # [B, L]
        start = target - length + 1 + shift  # [B]
        return (start.unsqueeze(1) + steps).masked_fill_(padded, 0)

    def sequence_rows(self, index: torch.Tensor, target_list_field: str) -> Interaction:
        """Whole-sequence training samples (``train_objective: sequence``) for target rows
        ``index`` ``[B]``: each row's history as input (``<field>_list``, ``[B, W]``, trimmed to
        the longest one) and the item after every input position as ``target_list_field``
        ``[B, W]`` (0 at padding). For a user's last training row this is the most recent
        ``MAX_ITEM_LIST_LENGTH + 1`` training items, input ``items[:-1]``, targets
        ``items[1:]``."""
        rows = {k: v[index] for k, v in self.inter_feat.interaction.items()}
        target, length = rows[TARGET_FIELD], rows[self.item_list_length_field]
        width = max(int(length.max()), 1) if len(length) else 1
        next_items = self._lean_seq[self.iid_field]
        shifted = self._list_index(target, length, width, shift=1).view(-1)
        rows[target_list_field] = torch.index_select(next_items, 0, shifted).view(-1, width).long()
        return self.join(self._lean_lists(rows, trim=True))

    def __getitem__(self, index, join=True):
        return self.rows(index, join)

    def rows(self, index, join: bool = True, trim: bool = False) -> Interaction:
        """``self[index]``; with ``trim`` the list fields are cut to the longest history in
        the batch (``[B, max(item_length)]`` instead of ``[B, MAX_ITEM_LIST_LENGTH]``)."""
        if TARGET_FIELD not in self.inter_feat:
            return super().__getitem__(index, join)
        if isinstance(index, np.ndarray):
            index = torch.from_numpy(index)
        if isinstance(index, torch.Tensor):
            rows = {k: v[index] for k, v in self.inter_feat.interaction.items()}
        else:
            rows = dict(self.inter_feat[index].interaction)
        rows = self._lean_lists(rows, trim=trim)
        return self.join(rows) if join else rows

    def leave_one_out(self, group_by, leave_one_mode):
        """RecBole's ``leave_one_out``, vectorised: same parts, same row order.

        Groups are taken in order of first appearance; within a group rows keep their order.
        A group of ``c`` rows gives ``c - k`` rows to training and one to each of the ``k =
        min(leave_one_num, c - 1)`` last parts.
        """
        if group_by is None:
            raise ValueError("leave one out strategy require a group field")
        leave_one_num = {"valid_and_test": 2, "valid_only": 1, "test_only": 1}[leave_one_mode]
        keys = self.inter_feat[group_by].numpy()
        n = len(keys)
        _, first, inverse, counts = np.unique(
            keys, return_index=True, return_inverse=True, return_counts=True
        )
        # Rows grouped by key, groups ordered by first appearance, stable inside a group.
        group_rank = np.empty(len(first), dtype=np.int64)
        group_rank[np.argsort(first, kind="stable")] = np.arange(len(first))
        order = np.argsort(group_rank[inverse], kind="stable")
        group_sizes = counts[np.argsort(first, kind="stable")]
        group_start = np.repeat(np.cumsum(group_sizes) - group_sizes, group_sizes)
        pos = np.arange(n) - group_start  # position inside the group, in `order`
        size = np.repeat(group_sizes, group_sizes)
        k = np.minimum(leave_one_num, size - 1)  # rows left out of the group
        from_end = size - pos  # 1 for the last row of a group
        # Part -j (j = 1: the last part) takes the row with from_end == j when k >= j.
        next_index = [order[from_end > k]]
        for j in range(leave_one_num, 0, -1):
            next_index.append(order[(from_end == j) & (k >= j)])
        empty = np.zeros(0, dtype=np.int64)
        if leave_one_mode == "valid_only":
            next_index.append(empty)
        elif leave_one_mode == "test_only":
            next_index = [next_index[0], empty, next_index[1]]
        self._drop_unused_col()
        next_df = [
            self.inter_feat[torch.from_numpy(np.asarray(i, dtype=np.int64))] for i in next_index
        ]
        return [self.copy(df) for df in next_df]

    def inter_matrix(self, form="coo", value_field=None):
        """User-item matrix of all interactions (targets + each history's first item)."""
        if not self.uid_field or not self.iid_field:
            raise ValueError(
                "dataset does not exist uid/iid, thus can not converted to sparse matrix."
            )
        first = self.inter_feat[self.item_list_length_field] == 1
        rows = self._lean_lists(dict(self.inter_feat[first].interaction))
        new_dict = {}
        for field in self.inter_feat:
            if field in (TARGET_FIELD, self.item_list_length_field):
                continue
            extra = rows[field]
            if field != self.uid_field and field in self._lean_seq:
                extra = rows[getattr(self, f"{field}_list_field")][:, 0]
            new_dict[field] = torch.cat([self.inter_feat[field], extra])
        return self._create_sparse_matrix(
            Interaction(new_dict), self.uid_field, self.iid_field, form, value_field
        )


# -- loaders -----------------------------------------------------------------------------------
class LeanTrainDataLoader(TrainDataLoader):
    """RecBole's ``TrainDataLoader`` that yields whole batches without a per-sample step.

    The shuffled order is the one RecBole's loader draws from the same generator (one int64
    draw for the iterator's base seed, then ``randperm``), so with the same seed both loaders
    give the same batches in the same order.

    ``train_batch_order: length_grouped`` instead cuts that permutation into windows of
    ``length_group_size`` batches, sorts each window by history length (stable), splits it
    into batches and shuffles the batches; each batch's lists are trimmed to its longest
    history. Every epoch still visits every sample once, but a batch now holds histories of
    similar length, so far fewer padding positions reach the model. Only for the models in
    :func:`is_padding_invariant`, whose scores do not depend on the trimmed padding. In
    data-parallel training the ranks split each global batch (:meth:`grouped_order`).
    """

    def __init__(self, config, dataset, sampler, shuffle=False):
        self.logger = getLogger()
        self._set_neg_sample_args(
            config, dataset, config["MODEL_INPUT_TYPE"], config["train_neg_sample_args"]
        )
        self.sample_size = self._count_samples(dataset)
        self.shuffle = shuffle
        self.config = config
        self._dataset = dataset
        self._sampler = sampler
        self._batch_size = self.step = self.model = None
        self._init_batch_size_and_step()
        self.generator = torch.Generator()
        self.generator.manual_seed(config["seed"])

        self.transform = construct_transform(config)
        self.is_sequential = config["MODEL_TYPE"] == ModelType.SEQUENTIAL
        self.length_grouped = train_batch_order(config) == "length_grouped"
        self.length_group_size = int(config["length_group_size"] or 50)
        index_sampler = None
        if not config["single_spec"]:
            index_sampler = torch.utils.data.distributed.DistributedSampler(
                range(self.sample_size), shuffle=shuffle, drop_last=False
            )
            self.step = max(1, self.step // config["world_size"])
            shuffle = False
        # A range, not RecBole's list(range(n)): 20M Python ints would take ~700 MB.
        torch.utils.data.DataLoader.__init__(
            self,
            dataset=range(self.sample_size),
            batch_size=self.step,
            collate_fn=self.collate_fn,
            num_workers=config["worker"],
            shuffle=shuffle,
            sampler=index_sampler,
            generator=self.generator,
        )

    def _count_samples(self, dataset) -> int:
        """Training samples per epoch: one per augmented row."""
        return len(dataset)

    def __iter__(self):
        if self.length_grouped:
            return self._batches()  # built in this process, whatever ``worker`` says
        if not self.config["single_spec"] or self.config["worker"]:
            return super().__iter__()
        return self._batches()

    def _rank_and_world(self) -> tuple[int, int]:
        if self.config["single_spec"] or not torch.distributed.is_initialized():
            return 0, 1
        return torch.distributed.get_rank(), torch.distributed.get_world_size()

    def _batches(self):
        n = self.sample_size
        # Same generator use as torch's _BaseDataLoaderIter + RandomSampler.
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        if self.length_grouped:
            yield from self._length_grouped_batches(order)
        else:
            for start in range(0, n, self.step):
                if order is None:
                    index = torch.arange(start, min(start + self.step, n))
                else:
                    index = order[start : start + self.step]
                data = self._dataset[index]
                yield self._neg_sampling(self.transform(self._dataset, data))
        if self.shuffle:
            torch.randperm(n, generator=self.generator)  # RandomSampler's trailing draw

    def grouped_order(
        self, order: torch.Tensor | None, rank: int = 0, world: int = 1
    ) -> list[torch.Tensor]:
        """Sample indices of the length-grouped batches, in the order they are served.

        Args:
            order: ``[n]`` the epoch's shuffled permutation (``None``: unshuffled).
            rank, world: this process's rank and the number of processes. Every rank draws
                the same ``order`` (same generator seed); the global batches of ``world x
                batch_size`` are built as below and rank ``r`` takes every ``world``-th sample
                of each, so all ranks see batches of similar width and the same number of
                batches. Like ``DistributedSampler``, the first samples are repeated to make
                ``n`` a multiple of ``world``.
        Returns:
            ``ceil(n / batch_size)`` index tensors (one process): windows of
            ``length_group_size`` batches of ``order``, each sorted by history length and cut
            into batches, then the batches shuffled (kept in place when the loader does not
            shuffle).
        """
        n = self.sample_size
        if order is None:
            order = torch.arange(n)
        if world > 1 and n % world:
            order = torch.cat([order, order[: world - n % world]])
        global_step = self.step * world
        lengths = self._dataset.inter_feat[self._dataset.item_list_length_field][order]  # [n]
        window = torch.arange(len(order)) // (global_step * self.length_group_size)  # [n]
        key = window * (int(lengths.max()) + 1 if n else 1) + lengths
        order = order[torch.sort(key, stable=True).indices]
        batches = list(torch.split(order, global_step))
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=self.generator)]
        if world > 1:
            batches = [batch[rank::world] for batch in batches]
        return batches

    def _length_grouped_batches(self, order: torch.Tensor | None):
        for index in self.grouped_order(order, *self._rank_and_world()):
            data = self._dataset.rows(index, trim=True)
            yield self._neg_sampling(self.transform(self._dataset, data))


class LeanFullSortEvalDataLoader(FullSortEvalDataLoader):
    """RecBole's full-sort evaluation loader over a lean split, optionally length-sorted.

    With ``sort_by_length`` the loader visits the split's rows in order of history length
    (stable, so users of equal length keep RecBole's order; the split itself is not changed)
    and trims every batch to its longest history: a batch of short histories no longer
    carries ``MAX_ITEM_LIST_LENGTH`` columns of padding. The metrics are means over users, so
    they do not depend on the order, and a padding-invariant model
    (:func:`scores_padding_invariant`) scores each user as at full width. In data-parallel
    evaluation the distributed sampler splits the loader's positions as before.
    """

    def __init__(self, config, dataset, sampler, shuffle=False, sort_by_length: bool = False):
        self.sort_by_length = bool(sort_by_length) and TARGET_FIELD in dataset.inter_feat
        self._order: torch.Tensor | None = None
        if self.sort_by_length:
            lengths = dataset.inter_feat[dataset.item_list_length_field]  # [n]
            self._order = torch.sort(lengths, stable=True).indices  # position -> row
        super().__init__(config, dataset, sampler, shuffle=shuffle)

    def collate_fn(self, index):
        if self._order is None or not self.is_sequential:
            return super().collate_fn(index)
        rows = self._order[torch.as_tensor(np.asarray(index), dtype=torch.long)]
        interaction = self._dataset.rows(rows, trim=True)
        interaction = self.transform(self._dataset, interaction)
        positive_u = torch.arange(len(interaction))
        return interaction, None, positive_u, interaction[self.iid_field]


def create_lean_dataset(config) -> LeanSequentialDataset:
    """Load ``config``'s dataset on the lean path (RecBole's ``create_dataset`` equivalent)."""
    dataset = LeanSequentialDataset(config)
    getLogger().info(set_color("data path", "blue") + ": lean")
    return dataset


def lean_data_preparation(
    config, dataset: LeanSequentialDataset, train_loader_class: type = LeanTrainDataLoader
):
    """RecBole's ``data_preparation`` for a :class:`LeanSequentialDataset`.

    Returns:
        ``(train_data, valid_data, test_data)``: a ``train_loader_class`` (prefix samples by
        default; :class:`~recbole_moe.data.sequence.SequenceTrainDataLoader` for whole
        sequences) and two :class:`LeanFullSortEvalDataLoader` (length-sorted and trimmed
        when :func:`sorts_evaluation`), or RecBole's ``NegSampleEvalDataLoader``, over lean
        splits.
    """
    built = dataset.build()
    train_dataset, valid_dataset, test_dataset = built
    train_sampler, valid_sampler, test_sampler = create_samplers(config, dataset, built)
    train_data = train_loader_class(config, train_dataset, train_sampler, shuffle=config["shuffle"])
    loaders = []
    for phase, split, sampler in (
        ("valid", valid_dataset, valid_sampler),
        ("test", test_dataset, test_sampler),
    ):
        loader_class = get_dataloader(config, phase)
        if loader_class is FullSortEvalDataLoader:
            loaders.append(
                LeanFullSortEvalDataLoader(
                    config, split, sampler, shuffle=False, sort_by_length=sorts_evaluation(config)
                )
            )
        else:
            loaders.append(loader_class(config, split, sampler, shuffle=False))
    return (train_data, *loaders)


def load_data(
    config, create_dataset, data_preparation, train_loader_class: type = LeanTrainDataLoader
):
    """The dataset and its three loaders on the path ``data_path_mode`` selects; the
    evaluation loaders carry the items each user has seen before (``seen_items``,
    :mod:`recbole_moe.data.seen`) where seen-item removal applies.

    ``create_dataset`` / ``data_preparation`` are the RecBole-path functions to use otherwise;
    ``train_loader_class`` is the lean path's training loader.

    Returns:
        ``(dataset, train_data, valid_data, test_data)``.
    """
    logger = getLogger()
    if data_path_mode(config) == "lean":
        try:
            dataset = create_lean_dataset(config)
        except Exception:
            inter_file = os.path.join(config["data_path"], f"{config['dataset']}.inter")
            check_interaction_file(inter_file)  # names file and line of a malformed row
            raise
        logger.info(dataset)
        loaders = lean_data_preparation(config, dataset, train_loader_class)
    else:
        dataset = create_dataset(config)
        logger.info(dataset)
        loaders = data_preparation(config, dataset)
    if seen_problem(config) is None:
        attach_seen_items(*loaders)  # eval_filter_seen, or a second protocol of a benchmark
    return (dataset, *loaders)


__all__ = [
    "BATCH_ORDERS",
    "EVAL_BATCH_ORDERS",
    "LeanFullSortEvalDataLoader",
    "RECBOLE_PADDING_INVARIANT_MODELS",
    "RECBOLE_SCORE_PADDING_INVARIANT_MODELS",
    "is_padding_invariant",
    "padding_invariant_models",
    "scores_padding_invariant",
    "LeanSequentialDataset",
    "LeanTrainDataLoader",
    "FullSortEvalDataLoader",
    "FeatureSource",
    "batch_order_problem",
    "create_lean_dataset",
    "data_path_mode",
    "estimate_recbole_bytes",
    "eval_batch_order",
    "eval_batch_order_problem",
    "lean_data_preparation",
    "lean_unsupported_reason",
    "load_data",
    "recbole_memory_estimate",
    "sorts_evaluation",
]
