"""Test metrics of a checkpoint with and without the user's own history in the ranking.

RecBole's full-sort evaluation of sequential models ranks every item, including the items of
the user's input history (``repeatable: True``). Several published SASRec results (e.g.
Klenitskiy & Vasilev 2023, the eSASRec benchmark) remove the items a user has already
interacted with from the ranking. This script computes HR@K and NDCG@K on the test split three
ways, for one checkpoint, so the protocols can be compared on the same model: all items; the
items of the model's input window removed (the last ``MAX_ITEM_LIST_LENGTH`` items); every item
of the user's history before the test item removed (what Klenitskiy & Vasilev's filter does; it
differs from the window only for histories longer than the window).

    python benchmarks/seen_items.py --checkpoint saved/SASRec-....pth --topk 5 10 20
"""

from __future__ import annotations

import argparse
import json
import os

import pandas as pd
import torch


def metrics(ranks: torch.Tensor, topk: list[int]) -> dict[str, float]:
    """HR@K and NDCG@K from 0-based ranks of the target item, ``[U]``."""
    out = {}
    for k in topk:
        hit = ranks < k
        out[f"hit@{k}"] = round(float(hit.float().mean()), 4)
        out[f"ndcg@{k}"] = round(float((hit / torch.log2(ranks.float() + 2)).mean()), 4)
    return out


def history_matrix(config, dataset) -> torch.Tensor:
    """``[n_users, n_items]`` bool: the items of every interaction in the dataset's atomic
    ``.inter`` file that its filters kept (the test items included; the caller keeps each
    user's own target)."""
    uid, iid = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
    path = os.path.join(config["data_path"], f"{config['dataset']}.inter")
    inter = pd.read_csv(path, sep="\t", dtype=str)
    inter.columns = [c.split(":")[0] for c in inter.columns]
    # interactions the dataset's filters removed (e.g. ml-1m-5core's 5-core filter) map to NaN
    users = inter[uid].map(dataset.field2token_id[uid])
    items = inter[iid].map(dataset.field2token_id[iid])
    kept = users.notna() & items.notna()
    users = torch.as_tensor(users[kept].to_numpy(dtype="int64"))
    items = torch.as_tensor(items[kept].to_numpy(dtype="int64"))
    seen = torch.zeros(dataset.user_num, dataset.item_num, dtype=torch.bool)
    seen[users, items] = True
    seen[:, 0] = False
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--topk", nargs="+", type=int, default=[5, 10, 20])
    args = parser.parse_args()

    import recbole_moe  # noqa: F401  (compatibility patches)
    from recbole_moe.quick_start import load_model

    loaded = load_model(args.checkpoint)
    config, model, test_data = loaded.config, loaded.model, loaded.test_data
    item_seq_field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
    whole_history = history_matrix(config, loaded.dataset)  # [U, V]
    ranks = {
        "all items (RecBole)": [],
        "seen items removed": [],
        "whole history removed": [],
    }
    repeats = users = 0
    model.eval()
    with torch.no_grad():
        for interaction, _, _, positive_i in test_data:
            scores = model.full_sort_predict(interaction).view(len(positive_i), -1)  # [B, V]
            scores[:, 0] = -torch.inf
            target = scores.gather(1, positive_i.unsqueeze(1))  # [B, 1]
            ranks["all items (RecBole)"].append((scores > target).sum(1))
            history = interaction[item_seq_field]  # [B, W], 0 = padding
            seen = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, history, True)
            seen[:, 0] = False
            repeats += int(seen.gather(1, positive_i.unsqueeze(1)).sum())
            users += len(positive_i)
            seen.scatter_(1, positive_i.unsqueeze(1), False)  # the target itself always stays
            ranks["seen items removed"].append(
                (scores.masked_fill(seen, -torch.inf) > target).sum(1)
            )
            # every earlier interaction: the user's row, without the test item itself
            earlier = whole_history[interaction[config["USER_ID_FIELD"]]]  # [B, V]
            earlier.scatter_(1, positive_i.unsqueeze(1), False)
            ranks["whole history removed"].append(
                (scores.masked_fill(earlier, -torch.inf) > target).sum(1)
            )
    result = {
        "checkpoint": args.checkpoint,
        "model": config["model"],
        "dataset": config["dataset"],
        "users": users,
        "targets_in_history": repeats,
        **{name: metrics(torch.cat(r), args.topk) for name, r in ranks.items()},
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
