"""Top-k recommendations from a saved checkpoint.

    recbole-moe recommend --checkpoint saved/HyMoERec-....pth --user 42 --topk 10

Python:

    rec = Recommender.load("saved/HyMoERec-....pth")
    rec.recommend(user_ids=["42"], topk=10)           # none of the user's known items
    rec.recommend_for_history(["50", "172", "133"])   # from a raw item-id history
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from recbole.data.interaction import Interaction
from recbole.utils import ModelType

from recbole_moe.checkpoint import check_checkpoint_matches, read_checkpoint
from recbole_moe.data.seen import SeenItems, history_pairs, remove_seen
from recbole_moe.errors import RecBoleMoeError
from recbole_moe.quick_start import load_model


class UnknownIdError(RecBoleMoeError, KeyError):
    """A user or item id that the checkpoint's dataset does not contain."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass
class Recommendation:
    """Top-k items for one user or history: original item ids and their scores, best first."""

    items: list[str]
    scores: list[float]


class Recommender:
    """A trained model with its dataset's id mappings, ready to recommend."""

    def __init__(self, config, model, dataset, test_data, seen: SeenItems | None = None) -> None:
        """``seen``: every user's known items (all splits), excluded from the user's
        recommendations (``None``: the items of :attr:`histories`)."""
        self.config = config
        self.model = model
        self.dataset = dataset
        self.uid_field = dataset.uid_field
        self.iid_field = dataset.iid_field
        self.item_seq_field = model.ITEM_SEQ
        self.item_len_field = model.ITEM_SEQ_LEN
        self.max_len = model.max_seq_length
        self.histories = self._full_histories(test_data._dataset)
        self.seen = seen

    @classmethod
    def load(
        cls,
        checkpoint: str,
        model: str | None = None,
        dataset: str | None = None,
        device: str | None = None,
        data_path: str | None = None,
    ) -> Recommender:
        """Load ``checkpoint``; with ``model``/``dataset`` given, refuse a checkpoint made by
        another model or on another dataset. ``data_path``: the folder holding
        ``<dataset>/<dataset>.inter`` (default: where the checkpoint was trained)."""
        made = read_checkpoint(checkpoint, map_location="cpu")
        if model is not None or dataset is not None:
            check_checkpoint_matches(
                made,
                model or made["config"]["model"],
                dataset or made["config"]["dataset"],
                checkpoint,
            )
        if made["config"]["MODEL_TYPE"] != ModelType.SEQUENTIAL:
            raise RecBoleMoeError(
                f"checkpoint {checkpoint} holds {made['config']['model']}, which is not a "
                "sequential model; recommend ranks next items from a history, which only "
                "sequential models do"
            )
        parts = load_model(checkpoint, device=device, checkpoint=made, data_path=data_path)
        splits = [data._dataset for data in (parts.train_data, parts.valid_data, parts.test_data)]
        return cls(parts.config, parts.model, parts.dataset, parts.test_data, SeenItems(splits))

    def _full_histories(self, test_dataset) -> dict[int, np.ndarray]:
        """Internal user id -> the user's latest items in order (the test input, at most
        ``MAX_ITEM_LIST_LENGTH`` items, plus the test item).

        The rows are read through ``test_dataset[...]``, which builds the history lists on the
        lean data path as well (it keeps no ``item_id_list`` column)."""
        inter = test_dataset[torch.arange(len(test_dataset))]
        users = inter[self.uid_field].numpy()
        seqs = inter[self.item_seq_field].numpy()
        lengths = inter[self.item_len_field].numpy()
        targets = inter[self.iid_field].numpy()
        return {
            int(u): np.append(seq[:n], t)
            for u, seq, n, t in zip(users, seqs, lengths, targets, strict=False)
        }

    def _user_index(self, user: str) -> int:
        token2id = self.dataset.field2token_id[self.uid_field]
        if str(user) not in token2id or token2id[str(user)] not in self.histories:
            examples = ", ".join(list(self.dataset.field2id_token[self.uid_field][1:4]))
            raise UnknownIdError(
                f"unknown user id '{user}' for dataset {self.config['dataset']} "
                f"({len(self.histories)} users with a history, e.g. {examples})"
            )
        return token2id[str(user)]

    def _item_indices(self, items: Sequence[str]) -> np.ndarray:
        token2id = self.dataset.field2token_id[self.iid_field]
        unknown = [str(i) for i in items if str(i) not in token2id]
        if unknown:
            raise UnknownIdError(
                f"unknown item id(s) {unknown} for dataset {self.config['dataset']}"
            )
        if not len(items):
            raise RecBoleMoeError("the item history is empty: give at least one item id")
        return np.array([token2id[str(i)] for i in items], dtype=np.int64)

    @torch.no_grad()
    def _recommend(
        self,
        histories: list[np.ndarray],
        users: list[int],
        topk: int,
        seen: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> list[Recommendation]:
        """Top-k of each history's scores, without the ``(row, item)`` pairs of ``seen``."""
        if topk < 1:
            raise RecBoleMoeError(f"topk={topk} must be an integer >= 1")
        batch = len(histories)
        seq = torch.zeros(batch, self.max_len, dtype=torch.long)
        lengths = torch.zeros(batch, dtype=torch.long)
        for row, history in enumerate(histories):
            recent = history[-self.max_len :]
            seq[row, : len(recent)] = torch.as_tensor(recent)
            lengths[row] = len(recent)
        interaction = Interaction(
            {
                self.uid_field: torch.as_tensor(users, dtype=torch.long),
                self.item_seq_field: seq,
                self.item_len_field: lengths,
            }
        ).to(self.config["device"])
        self.model.eval()
        scores = self.model.full_sort_predict(interaction).view(batch, -1).float().cpu()
        scores[:, 0] = -torch.inf  # padding id
        if seen is not None:
            remove_seen(scores, seen)
        k = min(topk, int(torch.isfinite(scores).sum(dim=1).min()))
        top_scores, top_ids = torch.topk(scores, k, dim=1)
        results = []
        for row in range(batch):
            tokens = self.dataset.id2token(self.iid_field, top_ids[row].numpy())
            results.append(Recommendation([str(t) for t in tokens], top_scores[row].tolist()))
        return results

    def recommend(
        self, user_ids: Sequence[str], topk: int = 10, exclude_history: bool = True
    ) -> list[Recommendation]:
        """Top-k next items for each user (original ids), from the user's latest items; with
        ``exclude_history`` none of the user's known items (the whole history) is recommended."""
        users = [self._user_index(u) for u in user_ids]
        histories = [self.histories[u] for u in users]
        seen = None
        if exclude_history:
            known = torch.as_tensor(users, dtype=torch.long)
            seen = self.seen.pairs(known) if self.seen else history_pairs(histories)
        return self._recommend(histories, users, topk, seen)

    def recommend_for_history(
        self, item_ids: Sequence[str], topk: int = 10, exclude_history: bool = True
    ) -> Recommendation:
        """Top-k next items after a raw item-id history (oldest first); with
        ``exclude_history`` none of its items is recommended."""
        history = self._item_indices(item_ids)
        seen = history_pairs([history]) if exclude_history else None
        return self._recommend([history], [0], topk, seen)[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="recbole-moe recommend", description="Top-k recommendations from a checkpoint."
    )
    parser.add_argument("--checkpoint", required=True, help="a .pth file written by training")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", nargs="+", help="original user id(s)")
    who.add_argument("--history", nargs="+", help="original item ids, oldest first")
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument(
        "--include_history", action="store_true", help="allow items already in the history"
    )
    parser.add_argument("--model", help="refuse the checkpoint unless it was made by this model")
    parser.add_argument(
        "--dataset", help="refuse the checkpoint unless it was made on this dataset"
    )
    parser.add_argument(
        "--data_path",
        help="folder holding <dataset>/<dataset>.inter (default: where the checkpoint was trained)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.topk < 1:
        parser.error(f"argument --topk: {args.topk} is not a positive integer")

    rec = Recommender.load(
        args.checkpoint, model=args.model, dataset=args.dataset, data_path=args.data_path
    )
    exclude = not args.include_history
    if args.user:
        named = list(zip(args.user, rec.recommend(args.user, args.topk, exclude), strict=False))
    else:
        named = [("history", rec.recommend_for_history(args.history, args.topk, exclude))]
    if args.json:
        print(json.dumps({who: {"items": r.items, "scores": r.scores} for who, r in named}))
    else:
        for who, result in named:
            print(f"user {who}:" if args.user else "history:")
            for rank, (item, score) in enumerate(
                zip(result.items, result.scores, strict=False), start=1
            ):
                print(f"  {rank:>3}. item {item:<12} score {score:.4f}")
    return 0
