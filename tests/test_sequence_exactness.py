"""``train_objective: sequence`` against independent computations: the loss at every position
equals RecBole's prefix losses, FAME and HyMoERec equal their equations written out by hand,
and HyMoERec's warm-up clock and balance loss behave as specified under the real trainer."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from recbole_moe.config import Config
from recbole_moe.model import get_model
from recbole_moe.model.sequence import SequenceObjective
from recbole_moe.objective import TARGET_LIST_FIELD
from recbole_moe.quick_start import get_trainer
from recbole_moe.testing import FakeDataset, build

N_ITEMS, MAX_LEN = 30, 12
SEQ_MODELS = ["SASRec", "GRU4Rec", "HyMoERec", "FAME", "Mamba4Rec"]
#: Small sizes, no dropout; keys a model does not read are ignored by it.
SMALL = {
    "hidden_size": 16,
    "embedding_size": 16,
    "inner_size": 32,
    "expert_inner_size": 24,
    "n_layers": 2,
    "n_heads": 2,
    "n_experts": 3,
    "top_k": 2,
    "d_state": 8,
    "MAX_ITEM_LIST_LENGTH": MAX_LEN,
    "train_batch_size": 100,
    "loss_type": "CE",
    "hidden_dropout_prob": 0.0,
    "attn_dropout_prob": 0.0,
    "dropout_prob": 0.0,
    "warmup_steps": 0,  # w(t) = 1: HyMoERec's output does not depend on the step
}


@pytest.fixture(scope="module")
def cfg_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("cfg")
    (root / "synth").mkdir()
    return str(root)


def make_model(cfg_root: str, name: str, seed: int = 0, spread: float = 0.1, **overrides):
    """``name`` on the fake dataset in float64, its random weights spread by ``spread`` (so that
    attention, routing and gates are far from uniform); the padding embedding stays 0."""
    config = Config(name, "synth", config_dict=dict(SMALL, data_path=cfg_root, **overrides))
    torch.manual_seed(seed)
    model = get_model(name)(config, FakeDataset(N_ITEMS)).double()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(spread * torch.randn_like(param))
        model.item_embedding.weight[0].zero_()
    return model


def rec_part(loss) -> torch.Tensor:
    """The recommendation loss (HyMoERec returns ``(rec, lb_weight * balance)``)."""
    return loss[0] if isinstance(loss, tuple) else loss


def padded(rows: list[list[int]], width: int) -> torch.Tensor:
    out = torch.zeros(len(rows), width, dtype=torch.long)
    for b, row in enumerate(rows):
        out[b, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def prefix_losses(model, history: list[int]) -> list[torch.Tensor]:
    """RecBole's prefix regime by hand: one ``calculate_loss`` call per prefix ``items[:t]``."""
    losses = []
    for t in range(1, len(history)):
        inter = Interaction(
            {
                "item_id_list": padded([history[:t]], MAX_LEN),
                "item_length": torch.tensor([t]),
                "item_id": torch.tensor([history[t]]),
            }
        )
        losses.append(rec_part(model.calculate_loss(inter)))
    return losses


def sequence_batch(histories: list[list[int]], extra_width: int = 0) -> Interaction:
    """Whole-sequence samples: inputs ``items[:-1]``, targets ``items[1:]``, 0-padded."""
    width = max(len(h) - 1 for h in histories) + extra_width
    return Interaction(
        {
            "item_id_list": padded([h[:-1] for h in histories], width),
            "item_length": torch.tensor([len(h) - 1 for h in histories]),
            TARGET_LIST_FIELD: padded([h[1:] for h in histories], width),
        }
    )


HISTORY_A = [3, 4, 5, 17, 6, 7, 8, 2, 9, 10, 11]  # 11 items: 10 prefixes
HISTORY_B = [21, 22, 1, 23, 24, 25]  # 6 items: 5 prefixes


# ------------------------------------------------------------ 1. sequence loss = prefix losses
@pytest.mark.parametrize("name", SEQ_MODELS)
def test_sequence_loss_is_mean_of_prefix_losses(cfg_root, name):
    """Full cross-entropy, no dropout, training mode: one user's sequence loss is the mean of
    RecBole's prefix losses; in a padded batch of two users it is the mean over all 15
    non-padding positions, and extra padding columns change nothing."""
    model = make_model(cfg_root, name)
    model.train()
    objective = SequenceObjective(model, 0)
    with torch.no_grad():
        per_a = prefix_losses(model, HISTORY_A)
        per_b = prefix_losses(model, HISTORY_B)
        one = rec_part(objective(sequence_batch([HISTORY_A])))
        two = rec_part(objective(sequence_batch([HISTORY_A, HISTORY_B])))
        wide = rec_part(objective(sequence_batch([HISTORY_B, HISTORY_A], extra_width=2)))
    expected_one = torch.stack(per_a).mean()
    expected_two = torch.stack(per_a + per_b).mean()
    assert one.dtype == torch.float64
    torch.testing.assert_close(one, expected_one, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(two, expected_two, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(wide, expected_two, rtol=1e-9, atol=1e-9)
    # the per-position mean differs from the mean of per-user means: the check is sharp
    per_user = (torch.stack(per_a).mean() + torch.stack(per_b).mean()) / 2
    assert abs(float(per_user - expected_two)) > 1e-6


# ------------------------------------------------------------ 2. FAME written out by hand
def fame_by_hand(model, item_seq: torch.Tensor) -> torch.Tensor:
    """FAME's logits ``[B, L, n_items]`` at every position from its equations (spec §2.1-2.4):
    per head h and expert n a query q^(h,n) sharing the head's key and value, router
    β^(h) = softmax([f^(h,1) ‖ … ‖ f^(h,N)] W_exp^(h)), per-head Add & Norm and FFN', per-head
    scores F^(h)·(x_v W_f^(h)), gate softmax(W_g [F^(1) ‖ … ‖ F^(H)] + b_g), Σ_h g_h P^(h)."""
    B, L = item_seq.shape
    H, d = model.n_heads, model.hidden_size
    dh = d // H
    layer = model.last_layer
    mha, ffn = layer.multi_head_attention, layer.feed_forward
    N = mha.n_experts
    valid = item_seq != 0
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    allowed = causal[None] & valid[:, None, :]  # [B, query, key]

    # embedding + lower (RecBole SASRec) layers
    x0 = model.item_embedding.weight[item_seq] + model.position_embedding.weight[:L][None]
    x0 = F.layer_norm(x0, (d,), model.LayerNorm.weight, model.LayerNorm.bias, model.layer_norm_eps)
    additive = torch.zeros(B, 1, L, L, dtype=x0.dtype).masked_fill(~allowed[:, None], -10000.0)
    x = (
        model.trm_encoder(x0, additive, output_all_encoded_layers=False)[-1]
        if model.n_layers > 1
        else x0
    )

    wq, bq = mha.query.weight.view(H, N, dh, d), mha.query.bias.view(H, N, dh)
    wk, bk = mha.key.weight.view(H, dh, d), mha.key.bias.view(H, dh)
    wv, bv = mha.value.weight.view(H, dh, d), mha.value.bias.view(H, dh)
    heads = []
    for h in range(H):
        key = x @ wk[h].T + bk[h]  # [B, L, d']
        value = x @ wv[h].T + bv[h]
        experts = []
        for n in range(N):
            query = x @ wq[h, n].T + bq[h, n]
            scores = (query @ key.transpose(1, 2)) / math.sqrt(dh)  # [B, L, L]
            attn = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
            experts.append(attn @ value)  # f^(h,n), [B, L, d']
        beta = torch.softmax(torch.cat(experts, dim=-1) @ mha.router[h], dim=-1)  # [B, L, N]
        mixed = sum(beta[..., n : n + 1] * experts[n] for n in range(N))
        z = F.layer_norm(
            x[..., h * dh : (h + 1) * dh] + mixed,
            (dh,),
            mha.LayerNorm.weight,
            mha.LayerNorm.bias,
            model.layer_norm_eps,
        )
        inner = F.gelu(z @ ffn.dense_1.weight.T + ffn.dense_1.bias)
        out = inner @ ffn.dense_2.weight.T + ffn.dense_2.bias
        heads.append(
            F.layer_norm(
                z + out, (dh,), ffn.LayerNorm.weight, ffn.LayerNorm.bias, model.layer_norm_eps
            )
        )  # F^(h), [B, L, d']
    gate = torch.softmax(torch.cat(heads, -1) @ model.gate.weight.T + model.gate.bias, dim=-1)
    sub = model.item_embedding.weight @ model.item_proj.weight.T  # [V, d]: x_v W_f, per head
    logits = 0
    for h in range(H):
        per_head = heads[h] @ sub[:, h * dh : (h + 1) * dh].T  # P^(h), [B, L, V]
        logits = logits + gate[..., h : h + 1] * per_head
    return logits


def fame_by_hand_uniform_gate(model, item_seq):
    """The hand-written FAME with g_h = 1/H (to show that the gate is not trivial)."""
    saved = model.gate.weight.data.clone(), model.gate.bias.data.clone()
    try:
        model.gate.weight.data.zero_()
        model.gate.bias.data.zero_()
        return fame_by_hand(model, item_seq)
    finally:
        model.gate.weight.data, model.gate.bias.data = saved


def test_fame_positions_equal_hand_written_equations(cfg_root):
    """FAME's fused logits at every non-padding position equal the hand-written model, and
    position t equals ``forward`` on the prefix of length t + 1."""
    model = make_model(cfg_root, "FAME", n_layers=2, n_heads=2, n_experts=3)
    model.eval()
    histories = [[3, 4, 5, 17, 6, 7, 8, 2], [21, 22, 1, 23, 24], [9]]
    item_seq, length = padded(histories, 8), torch.tensor([len(h) for h in histories])
    keep = item_seq != 0
    with torch.no_grad():
        fused = model.forward_positions(item_seq, length)  # [B, L, d]
        logits = fused @ model.item_embedding.weight.T
        expected = fame_by_hand(model, item_seq)
        torch.testing.assert_close(logits[keep], expected[keep], rtol=1e-9, atol=1e-9)
        # the gate matters here: a uniform gate gives other scores
        assert (
            expected[keep] - fame_by_hand_uniform_gate(model, item_seq)[keep]
        ).abs().max() > 1e-4
        for b, history in enumerate(histories):
            for t in range(len(history)):
                prefix = padded([history[: t + 1]], 8)
                last = model.forward(prefix, torch.tensor([t + 1]))[0]
                torch.testing.assert_close(fused[b, t], last, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------ 3. HyMoERec's layer by hand
@pytest.mark.parametrize("moe_impl", ["loop", "dense"])
def test_hymoerec_layer_equals_dense_plus_alpha_moe(cfg_root, moe_impl):
    """y = y_dense + σ(a)·w(t)·y_moe with top-K gates renormalised over the chosen experts;
    tokens outside the mask get the dense branch only."""
    model = make_model(cfg_root, "HyMoERec", warmup_steps=8, moe_impl=moe_impl, spread=0.3)
    model.eval()
    model.train_step.fill_(6)
    ff = model.trm_encoder.layer[0].feed_forward
    w = model.warmup_factor()
    assert float(w) == 0.75  # linear warm-up: 6 / 8 (exact in float32, the clock's dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 7, model.hidden_size, generator=g, dtype=torch.float64)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 1:] = False
    with torch.no_grad():
        out, routing = ff(x, w, mask)

        dense = ff.dense_2(F.gelu(ff.dense_1(x)))  # shared expert
        logits = x @ ff.router.gate.weight.T  # [B, L, E], no bias
        top, idx = logits.topk(model.top_k, dim=-1)
        gates = torch.softmax(top, dim=-1)  # renormalised over the K selected experts
        bank = ff.experts
        moe = torch.zeros_like(x)
        for k in range(model.top_k):
            for e in range(model.n_experts):
                chosen = (idx[..., k] == e).unsqueeze(-1)
                y_e = F.gelu(x @ bank.w1[e] + bank.b1[e]) @ bank.w2[e] + bank.b2[e]
                moe = moe + torch.where(chosen, gates[..., k : k + 1] * y_e, 0.0)
        moe = moe * mask.unsqueeze(-1)
        alpha = torch.sigmoid(ff.alpha_param) * 0.75
        y = dense + alpha * moe
        expected = F.layer_norm(
            x + y,
            (model.hidden_size,),
            ff.LayerNorm.weight,
            ff.LayerNorm.bias,
            model.layer_norm_eps,
        )
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(routing.probs, torch.softmax(logits, -1), rtol=1e-12, atol=1e-12)
    assert (moe[mask].abs().amax(-1) > 1e-3).all()  # the routed branch is really there


def test_hymoerec_at_zero_warmup_equals_dense_only_model(cfg_root):
    """w(t) = 0 (train_step 0, warm-up on): the output is exactly the dense-only model's
    (routed_experts False, same shared weights); after the warm-up it is not."""
    torch.manual_seed(0)
    settings = dict(
        SMALL, data_path=cfg_root, warmup_steps=10, hidden_dropout_prob=0.2, attn_dropout_prob=0.2
    )
    hybrid = get_model("HyMoERec")(
        Config("HyMoERec", "synth", config_dict=settings), FakeDataset(N_ITEMS)
    )
    dense = get_model("HyMoERec")(
        Config("HyMoERec", "synth", config_dict=dict(settings, routed_experts=False)),
        FakeDataset(N_ITEMS),
    )
    hybrid_state = hybrid.state_dict()
    shared = {k: v for k, v in hybrid_state.items() if k in dense.state_dict()}
    assert len(shared) == len(dense.state_dict())  # every dense-only weight comes from the hybrid
    dense.load_state_dict(shared)
    hybrid.eval(), dense.eval()
    item_seq = padded([HISTORY_A, HISTORY_B, [7]], MAX_LEN)
    length = torch.tensor([len(HISTORY_A), len(HISTORY_B), 1])
    with torch.no_grad():
        assert float(hybrid.warmup_factor()) == 0.0
        assert torch.equal(
            hybrid.forward_positions(item_seq, length), dense.forward_positions(item_seq, length)
        )
        assert torch.equal(hybrid(item_seq, length), dense(item_seq, length))
        hybrid.train_step.fill_(10)  # end of the warm-up: w = 1
        assert not torch.allclose(hybrid(item_seq, length), dense(item_seq, length), atol=1e-6)


# -------------------------------------------------------- 4. the warm-up clock under the trainer
def training_rows(data_path: str, dataset: str) -> tuple[int, int]:
    """From the raw ``.inter`` file: (users with a training row, training rows). A user with c
    interactions has c - 1 prefix rows, of which the last two are validation and test."""
    with open(f"{data_path}/{dataset}/{dataset}.inter", encoding="utf-8") as f:
        next(f)
        counts = Counter(line.split("\t")[0] for line in f)
    rows = [c - 3 for c in counts.values() if c - 3 > 0]
    return len(rows), sum(rows)


@pytest.mark.parametrize("objective", ["prefix", "sequence"])
def test_train_step_counts_optimizer_steps_under_the_trainer(synth, tmp_path, objective):
    """After N epochs of the real trainer, train_step = N × batches per epoch, and the warm-up
    length is warmup_epochs × batches per epoch (users per epoch under ``sequence``)."""
    epochs, batch_size, warmup_epochs = 2, 256, 3
    users, rows = training_rows(synth.data_path, synth.dataset)
    samples = users if objective == "sequence" else rows
    batches = math.ceil(samples / batch_size)
    parts = build(
        "HyMoERec",
        synth.data_path,
        synth.dataset,
        {
            "train_objective": objective,
            "epochs": epochs,
            "train_batch_size": batch_size,
            "hidden_size": 16,
            "inner_size": 32,
            "expert_inner_size": 16,
            "n_layers": 1,
            "warmup_epochs": warmup_epochs,
            "checkpoint_dir": str(tmp_path / "saved"),
        },
    )
    config, train_data, model = parts.config, parts.train_data, parts.model
    assert len(train_data) == batches
    assert int(model.warmup_length) == warmup_epochs * batches
    trainer = get_trainer(config, model)
    trainer.fit(train_data, None, saved=False, show_progress=False)
    assert int(model.train_step) == epochs * batches
    assert float(model.warmup_factor()) == pytest.approx(epochs / warmup_epochs)


# ------------------------------------------------------------ 5. the balance loss balances
def test_balance_loss_step_raises_router_entropy(cfg_root):
    """One SGD step on the balance loss alone raises the entropy of the mean routing
    distribution over non-padding tokens, summed over layers (computed here by hand)."""
    model = make_model(cfg_root, "HyMoERec", lb_weight=1.0, n_experts=4, spread=0.2)
    with torch.no_grad():  # an unbalanced start: expert 0 favoured everywhere
        for layer in model.trm_encoder.layer:
            layer.feed_forward.router.gate.weight.mul_(5.0)
    model.train()
    inputs = []
    hooks = [
        layer.feed_forward.router.register_forward_pre_hook(lambda m, a: inputs.append((m, a[0])))
        for layer in model.trm_encoder.layer
    ]
    batch = sequence_batch([HISTORY_A, HISTORY_B, [5, 6, 7, 8]])
    mask = batch["item_id_list"] != 0

    def entropy() -> torch.Tensor:
        total = 0.0
        for router, x in inputs:
            probs = torch.softmax(x.detach() @ router.gate.weight.detach().T, dim=-1)[mask]
            mean = probs.mean(0)
            total = total + -(mean * mean.log()).sum()
        return total

    try:
        loss = model.calculate_sequence_loss(batch)
        assert isinstance(loss, tuple) and len(loss) == 2
        before = entropy()
        assert before < 0.95 * len(inputs) * math.log(4)  # far from balanced
        # the balance loss is the negative entropy of mean usage, summed over layers
        torch.testing.assert_close(loss[1].detach(), -before, rtol=1e-10, atol=1e-10)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        optimizer.zero_grad()
        loss[1].backward()
        optimizer.step()
        inputs.clear()
        with torch.no_grad():
            model.calculate_sequence_loss(batch)
        after = entropy()
    finally:
        for hook in hooks:
            hook.remove()
    assert after > before + 1e-3


# ------------------------------------------------------------ 6. batches computed in length groups
HISTORIES = [
    HISTORY_A,
    HISTORY_B,
    [5, 6],
    [7, 8, 9, 10],
    [11, 12, 13, 14, 15, 16, 17, 18, 19],
    [20, 21, 22],
    [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
    [14, 15],
]


def test_length_chunks_cover_every_row_once_in_length_order():
    from recbole_moe.model.sequence import length_chunks

    lengths = torch.tensor([5, 1, 9, 3, 3, 7, 2])
    parts = length_chunks(lengths, 3)
    assert [len(p) for p in parts] == [3, 2, 2]
    joined = torch.cat(parts)
    assert sorted(joined.tolist()) == list(range(7))
    assert lengths[joined].tolist() == sorted(lengths.tolist())
    assert len(length_chunks(lengths[:2], 4)) == 2  # never an empty group


@pytest.mark.parametrize("name", SEQ_MODELS)
def test_chunked_batch_gives_the_batch_loss_and_gradient(cfg_root, name):
    """Dropout off: the batch computed in 3 length groups (each trimmed to its longest history)
    has the loss of the whole batch, the mean over all its non-padding positions computed here
    from RecBole-style prefix losses, and the same gradient."""
    overrides = {"lb_weight": 0.0} if name == "HyMoERec" else {}
    model = make_model(cfg_root, name, **overrides)
    model.train()
    expected = torch.stack([loss for h in HISTORIES for loss in prefix_losses(model, h)]).mean()
    grads = {}
    for chunks in (1, 3):
        model.zero_grad()
        loss = rec_part(SequenceObjective(model, 0, chunks)(sequence_batch(HISTORIES)))
        torch.testing.assert_close(loss, expected.detach(), rtol=1e-9, atol=1e-9)
        loss.backward()
        grads[chunks] = {
            n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
        }
    assert grads[1].keys() == grads[3].keys() and grads[1]
    for key, value in grads[1].items():
        torch.testing.assert_close(grads[3][key], value, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("name", ["SASRec", "HyMoERec"])
def test_chunked_batch_scores_all_groups_in_one_loss_call(cfg_root, name, monkeypatch):
    """The length groups' states are scored together: one call of the chunked loss per batch,
    over every non-padding position of the batch."""
    from recbole_moe.layers import sequence_loss

    calls = []
    original = sequence_loss.linear_cross_entropy

    def counted(hidden, *args, **kwargs):
        calls.append(hidden.shape[0])
        return original(hidden, *args, **kwargs)

    monkeypatch.setattr(sequence_loss, "linear_cross_entropy", counted)
    model = make_model(cfg_root, name)
    model.train()
    SequenceObjective(model, 0, 3)(sequence_batch(HISTORIES))
    assert calls == [sum(len(h) - 1 for h in HISTORIES)]


def record_encoder_widths(model) -> list[int]:
    """The widths of the sequences that pass ``model.trm_encoder`` from now on, in order."""
    widths = []
    forward = model.trm_encoder.forward

    def record(hidden, *args, **kwargs):
        widths.append(hidden.size(1))
        return forward(hidden, *args, **kwargs)

    model.trm_encoder.forward = record
    return widths


def test_chunked_batch_trims_each_group_to_its_longest_history(cfg_root):
    model = make_model(cfg_root, "SASRec")
    widths = record_encoder_widths(model)
    SequenceObjective(model, 0, 3)(sequence_batch(HISTORIES))
    lengths = sorted(len(h) - 1 for h in HISTORIES)  # groups of 3, 3, 2 users
    assert widths == [lengths[2], lengths[5], lengths[7]]


def test_chunked_hymoerec_advances_its_clock_once_per_batch(cfg_root):
    model = make_model(cfg_root, "HyMoERec", warmup_steps=10)
    model.train()
    seen = []
    warmup = model.warmup_factor

    def record():
        seen.append(int(model.train_step))
        return warmup()

    model.warmup_factor = record
    SequenceObjective(model, 0, 4)(sequence_batch(HISTORIES))
    assert int(model.train_step) == 1
    assert seen and set(seen) == {0}  # every group saw the batch's step


def bert4rec_loss_by_hand(model, histories: list[list[int]], seed: int) -> torch.Tensor:
    """BERT4Rec's cloze loss written out: each whole history (inputs + last target) masked
    with the draws of ``torch.rand`` under ``seed`` (one more masked item where none was),
    the masked positions scored against every item with the output bias. A history longer
    than the model's ``max_seq_length`` keeps its most recent items."""
    histories = [h[-model.max_seq_length :] for h in histories]
    width = max(len(h) for h in histories)
    full = padded(histories, width)
    torch.manual_seed(seed)
    draws = torch.rand(full.shape)
    logits, targets = [], []
    for b, history in enumerate(histories):
        picked = [t for t in range(len(history)) if draws[b, t] < model.mask_ratio]
        picked = picked or [len(history) - 1]
        inputs = full[b : b + 1].clone()
        inputs[0, picked] = model.mask_token
        states = model.forward(inputs)[0]  # [W, H]
        for t in picked:
            scores = states[t] @ model.item_embedding.weight[: model.n_items].t()
            logits.append(scores + model.output_bias)
            targets.append(history[t])
    return F.cross_entropy(torch.stack(logits), torch.tensor(targets))


#: One history longer than ``MAX_LEN``: its oldest item is dropped.
BERT4REC_HISTORIES = [*HISTORIES, list(range(1, MAX_LEN + 2))]


@pytest.mark.parametrize("chunks", [1, 3])
def test_bert4rec_cloze_loss_equals_hand_computation(cfg_root, chunks):
    """Whole or in length groups, the cloze loss is the mean cross-entropy of the batch's
    masked items, each user's state computed alone at its own width."""
    model = make_model(cfg_root, "BERT4Rec", mask_ratio=0.4)
    model.eval()
    torch.manual_seed(5)
    loss = SequenceObjective(model, 0, chunks)(sequence_batch(BERT4REC_HISTORIES))
    expected = bert4rec_loss_by_hand(model, BERT4REC_HISTORIES, seed=5)
    torch.testing.assert_close(loss, expected, rtol=1e-9, atol=1e-12)


def test_chunked_bert4rec_has_the_unchunked_gradient_and_trims_groups(cfg_root):
    model = make_model(cfg_root, "BERT4Rec", mask_ratio=0.4)
    model.eval()
    widths = record_encoder_widths(model)
    grads = {}
    for chunks in (1, 3):
        model.zero_grad()
        torch.manual_seed(11)
        SequenceObjective(model, 0, chunks)(sequence_batch(BERT4REC_HISTORIES)).backward()
        grads[chunks] = {n: p.grad.clone() for n, p in model.named_parameters()}
    # whole histories of at most MAX_LEN items; 3 groups of 3 users
    lengths = sorted(min(len(h), MAX_LEN) for h in BERT4REC_HISTORIES)
    assert widths == [lengths[-1], lengths[2], lengths[5], lengths[8]]
    for key, value in grads[1].items():
        torch.testing.assert_close(grads[3][key], value, rtol=1e-7, atol=1e-10)
    assert grads[3]["output_bias"].abs().sum() > 0
