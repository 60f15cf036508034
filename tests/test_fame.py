"""FAME: shapes, gate/router distributions, per-head independence, SASRec equivalence, switches,
prediction consistency, checkpoints, reproducibility and learning on the planted pattern."""

from __future__ import annotations

import copy
import glob
import threading

import pytest
import torch
from recbole.model.sequential_recommender.sasrec import SASRec
from torch.utils._python_dispatch import TorchDispatchMode

import recbole_moe  # noqa: F401  (applies the compatibility patches before RecBole is used)
from recbole_moe.model.fame import FAME
from recbole_moe.quick_start import get_trainer, load_model, run
from recbole_moe.testing import build, tiny_config
from recbole_moe.trainer import statistics_lines, statistics_scalars

FAME_SETTINGS = {"n_heads": 2, "n_experts": 3, "n_layers": 2}
E2E_SETTINGS = dict(FAME_SETTINGS, n_layers=1)  # end-to-end runs: one (MoE) layer keeps them fast


class Overlay:
    """A config view that overrides some keys of a RecBole ``Config``."""

    def __init__(self, base, **overrides):
        self.base, self.overrides = base, overrides

    def __getitem__(self, key):
        return self.overrides[key] if key in self.overrides else self.base[key]


@pytest.fixture(scope="module")
def env(synth):
    """The synthetic dataset, its RecBole config/dataset and one training batch."""
    parts = build("FAME", synth.data_path, synth.dataset, FAME_SETTINGS)
    config, dataset, train_data = parts.config, parts.train_data._dataset, parts.train_data
    batch = next(iter(train_data))
    batch = batch[0] if isinstance(batch, tuple) else batch
    return {"root": synth.data_path, "config": config, "dataset": dataset, "batch": batch}


def make(env, seed=0, **overrides) -> FAME:
    torch.manual_seed(seed)
    return FAME(Overlay(env["config"], **overrides), env["dataset"])


def copy_shared(src, dst) -> None:
    """Copy every parameter of ``src`` whose name and shape exist in ``dst``."""
    target = dst.state_dict()
    dst.load_state_dict(
        {k: v for k, v in src.state_dict().items() if k in target and target[k].shape == v.shape},
        strict=False,
    )


def with_negatives(model, batch):
    inter = copy.copy(batch)
    inter.update(type(batch)({model.NEG_ITEM_ID: torch.randint(1, model.n_items, (len(batch),))}))
    return inter


def full_scores(model, batch):
    model.eval()
    with torch.no_grad():
        return model.full_sort_predict(batch)


# --------------------------------------------------------------------------- shapes and gradients
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"fusion": "probs"},
        {"item_subemb": "split", "gate": "uniform"},
        {"moe_attention": False},
        {"head_prediction": False},
        {"n_layers": 1},
        {"loss_type": "BPR"},
        {"loss_type": "BPR", "fusion": "probs"},
    ],
)
def test_shapes_and_finite_gradients(env, overrides):
    model = make(env, **overrides)
    model.train()
    batch = (
        with_negatives(model, env["batch"]) if overrides.get("loss_type") == "BPR" else env["batch"]
    )
    loss = model.calculate_loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert int(model.gate_stats.count) == len(
        batch
    )  # one encoder pass per training batch (BPR included)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    if model.moe_attention:
        assert model.last_layer.multi_head_attention.router.grad.abs().sum() > 0
    B, H = len(env["batch"]), model.n_heads
    model.eval()
    with torch.no_grad():
        assert model.full_sort_predict(env["batch"]).shape == (B, model.n_items)
        assert model.predict(env["batch"]).shape == (B,)
        if model.head_prediction:
            head_repr, gate, beta = model.encode(
                env["batch"][model.ITEM_SEQ], env["batch"][model.ITEM_SEQ_LEN]
            )
            n = model.n_experts if model.moe_attention else 1
            assert head_repr.shape == (B, H, model.hidden_size // H)
            assert gate.shape == (B, H) and beta.shape == (B, H, n)


def test_gate_and_router_are_distributions(env):
    model = make(env)
    model.eval()
    out = model.explain(env["batch"])
    B, H, N = len(env["batch"]), model.n_heads, model.n_experts
    assert out["gate"].shape == (B, H) and out["router"].shape == (B, H, N)
    assert out["per_head_scores"].shape == (B, H, model.n_items)
    for weights in (out["gate"], out["router"]):
        assert (weights >= 0).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    # gates differ between sequences (context dependent)
    assert out["gate"].std(0).max() > 0
    uniform = make(env, gate="uniform")
    uniform.eval()
    torch.testing.assert_close(uniform.explain(env["batch"])["gate"], torch.full((B, H), 1.0 / H))


# --------------------------------------------------------------------------- per-head independence
@pytest.mark.parametrize("item_subemb", ["proj", "split"])
def test_head_score_depends_only_on_its_own_representation(env, item_subemb):
    model = make(env, item_subemb=item_subemb)
    model.eval()
    _H, dh = model.n_heads, model.hidden_size // model.n_heads
    with torch.no_grad():
        head_repr, _, _ = model.encode(
            env["batch"][model.ITEM_SEQ], env["batch"][model.ITEM_SEQ_LEN]
        )
        base = model.head_scores(head_repr)  # [B, H, n_items]
        perturbed = head_repr.clone()
        perturbed[:, 1] += torch.randn_like(perturbed[:, 1])
        new = model.head_scores(perturbed)
        torch.testing.assert_close(new[:, 0], base[:, 0], rtol=0, atol=0)
        assert not torch.allclose(new[:, 1], base[:, 1])
        if item_subemb == "split":  # perturb head 1's slice of the item embeddings
            model.item_embedding.weight[:, dh:] += 1.0
            new = model.head_scores(head_repr)
            torch.testing.assert_close(new[:, 0], base[:, 0], rtol=0, atol=0)
            assert not torch.allclose(new[:, 1], base[:, 1])


def test_head_path_after_attention_is_per_head(env):
    """Residual + LayerNorm' + FFN' of head 0 ignore head 1's attention output."""
    model = make(env)
    model.eval()
    attention = model.last_layer.multi_head_attention
    seq, lens = env["batch"][model.ITEM_SEQ], env["batch"][model.ITEM_SEQ_LEN]
    route = attention.route
    with torch.no_grad():
        base, _, _ = model.encode(seq, lens)

        def perturbed_route(expert_out):
            mixed, beta = route(expert_out)
            mixed = mixed.clone()
            mixed[:, :, 1] += 3.0 * torch.randn_like(mixed[:, :, 1])  # [B, Q, H, d']
            return mixed, beta

        attention.route = perturbed_route
        new, _, _ = model.encode(seq, lens)
    torch.testing.assert_close(new[:, 0], base[:, 0], rtol=0, atol=0)
    assert not torch.allclose(new[:, 1], base[:, 1])


# --------------------------------------------------------------------------- SASRec equivalence
@pytest.mark.parametrize("n_layers", [1, 2])
def test_switches_off_equals_sasrec(env, n_layers):
    settings = {"n_layers": n_layers, "moe_attention": False, "head_prediction": False}
    torch.manual_seed(1)
    sasrec = SASRec(Overlay(env["config"], **settings), env["dataset"])
    fame = make(env, **settings)
    fame.load_state_dict(sasrec_state_dict_to_fame(sasrec.state_dict(), n_layers))
    sasrec.eval(), fame.eval()
    batch = env["batch"]
    torch.testing.assert_close(fame.full_sort_predict(batch), sasrec.full_sort_predict(batch))
    torch.testing.assert_close(fame.predict(batch), sasrec.predict(batch))
    loss_s, loss_f = sasrec.calculate_loss(batch), fame.calculate_loss(batch)
    torch.testing.assert_close(loss_f, loss_s)
    loss_s.backward(), loss_f.backward()
    grads = sasrec_state_dict_to_fame({k: p.grad for k, p in sasrec.named_parameters()}, n_layers)
    for name, p in fame.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- each switch matters
def test_moe_attention_off_is_one_expert(env):
    """N identical experts reduce to moe_attention=False; distinct experts change the scores."""
    off = make(env, moe_attention=False)
    on = make(env, seed=1)
    H, N, dh = on.n_heads, on.n_experts, on.hidden_size // on.n_heads
    state = on.state_dict()
    for name, value in off.state_dict().items():
        if name.startswith("last_layer.multi_head_attention.query."):
            value = value.view(H, 1, dh, *value.shape[1:]).expand(H, N, dh, *value.shape[1:])
            value = value.reshape(state[name].shape)
        state[name] = value
    on.load_state_dict(state)
    torch.testing.assert_close(full_scores(on, env["batch"]), full_scores(off, env["batch"]))
    with torch.no_grad():
        on.last_layer.multi_head_attention.query.weight.add_(
            0.2 * torch.randn_like(state["last_layer.multi_head_attention.query.weight"])
        )
    assert not torch.allclose(
        full_scores(on, env["batch"]), full_scores(off, env["batch"]), atol=1e-4
    )


def test_learned_gate_vs_uniform(env):
    learned, uniform = make(env), make(env, gate="uniform")
    with torch.no_grad():
        learned.gate.weight.zero_()
        learned.gate.bias.zero_()
    copy_shared(learned, uniform)
    torch.testing.assert_close(
        full_scores(learned, env["batch"]), full_scores(uniform, env["batch"])
    )
    with torch.no_grad():
        learned.gate.bias.copy_(torch.tensor([2.0, -2.0]))
    assert not torch.allclose(
        full_scores(learned, env["batch"]), full_scores(uniform, env["batch"]), atol=1e-4
    )


def test_item_subemb_proj_vs_split(env):
    proj, split = make(env), make(env, item_subemb="split")
    with torch.no_grad():
        proj.item_proj.weight.copy_(torch.eye(proj.hidden_size))
    copy_shared(proj, split)
    torch.testing.assert_close(full_scores(proj, env["batch"]), full_scores(split, env["batch"]))
    with torch.no_grad():
        proj.item_proj.weight.normal_(0, 0.3)
    assert not torch.allclose(
        full_scores(proj, env["batch"]), full_scores(split, env["batch"]), atol=1e-4
    )


def test_fusion_logits_vs_probs(env):
    logits, probs = make(env), make(env, fusion="probs")
    probs.load_state_dict(logits.state_dict())
    log_p_logits = torch.log_softmax(full_scores(logits, env["batch"]), -1)
    log_p_probs = full_scores(probs, env["batch"])
    # probs fusion returns normalised log-probabilities
    torch.testing.assert_close(log_p_probs.exp().sum(-1), torch.ones(len(env["batch"])))
    assert not torch.allclose(log_p_logits, log_p_probs, atol=1e-4)


def test_head_prediction_switch_changes_scores(env):
    on, off = make(env), make(env, head_prediction=False)
    copy_shared(on, off)  # shared embeddings / lower layers / Q, K, V
    assert not torch.allclose(
        full_scores(on, env["batch"]), full_scores(off, env["batch"]), atol=1e-4
    )
    assert off.gate is None and off.item_proj is None
    with pytest.raises(ValueError):
        off.explain(env["batch"])


@pytest.mark.parametrize("n_heads,n_experts", [(1, 2), (4, 1), (4, 4)])
def test_head_and_expert_counts(env, n_heads, n_experts):
    model = make(env, n_heads=n_heads, n_experts=n_experts)
    model.eval()
    out = model.explain(env["batch"])
    assert out["gate"].shape[1] == n_heads and out["router"].shape[1:] == (n_heads, n_experts)
    query = model.last_layer.multi_head_attention.query
    assert query.out_features == n_experts * model.hidden_size


# --------------------------------------------------------------------------- prediction paths
@pytest.mark.parametrize(
    "overrides", [{}, {"fusion": "probs"}, {"item_subemb": "split"}, {"head_prediction": False}]
)
def test_full_sort_predict_agrees_with_predict(env, overrides):
    model = make(env, **overrides)
    model.eval()
    batch = env["batch"]
    with torch.no_grad():
        full = model.full_sort_predict(batch)
        items = batch[model.ITEM_ID]
        torch.testing.assert_close(full.gather(1, items[:, None]).squeeze(1), model.predict(batch))
        if model.head_prediction:
            out = model.explain(batch)
            torch.testing.assert_close(out["scores"], full, rtol=1e-5, atol=1e-5)
            some = torch.stack([items, items.flip(0)], dim=1)  # [B, 2]
            sub = model.explain(batch, some)
            torch.testing.assert_close(
                sub["per_head_scores"],
                out["per_head_scores"].gather(2, some[:, None].expand(-1, model.n_heads, -1)),
            )
            torch.testing.assert_close(sub["scores"], full.gather(1, some), rtol=1e-5, atol=1e-5)


class _MaxItemTensor(TorchDispatchMode):
    """Records the largest tensor produced by any op that has an ``n_items``-sized dimension."""

    def __init__(self, n_items):
        super().__init__()
        self.n_items, self.largest = n_items, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and self.n_items in t.shape:
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("fusion,bound_heads", [("logits", False), ("probs", True)])
def test_full_sort_predict_memory_bound(env, fusion, bound_heads):
    """Nothing item-sized beyond [B, n_items] (logits) or [B, H, n_items] (probs) is built."""
    model = make(env, fusion=fusion)
    model.eval()
    B, H, V = len(env["batch"]), model.n_heads, model.n_items
    with torch.no_grad(), _MaxItemTensor(V) as mode:
        model.full_sort_predict(env["batch"])
    assert mode.largest <= V * max(B * (H if bound_heads else 1), model.hidden_size)


# --------------------------------------------------------------------------- visibility
class _Recorder:
    def __init__(self):
        self.lines, self.scalars = [], {}

    def info(self, message):
        self.lines.append(message)

    def add_scalar(self, tag, value, step):
        self.scalars[tag] = (value, step)


def test_epoch_stats_are_logged_and_reset(env):
    model = make(env)
    model.train()
    model.calculate_loss(env["batch"])
    model.calculate_loss(env["batch"])
    model.eval()
    model.full_sort_predict(env["batch"])  # evaluation does not count
    assert int(model.gate_stats.count) == 2 * len(env["batch"])
    stats = model.epoch_statistics()
    H, N = model.n_heads, model.n_experts
    torch.testing.assert_close(stats["gate"].sum(), torch.tensor(1.0))
    torch.testing.assert_close(stats["router"].sum(-1), torch.ones(H))
    plain = {k: v.tolist() for k, v in stats.items()}
    (line,) = statistics_lines("FAME", 3, plain)
    assert line.startswith("epoch 3 FAME statistics: gate=[") and "router=[[" in line
    scalars = dict(statistics_scalars(plain, "FAME"))
    assert len(scalars) == H + H * N and "FAME/router/0/1" in scalars
    model.reset_statistics()
    assert model.epoch_statistics() is None  # reset: nothing seen since


def sasrec_state_dict_to_fame(
    state_dict: dict[str, torch.Tensor], n_layers: int
) -> dict[str, torch.Tensor]:
    """Rename a RecBole SASRec state_dict for FAME with ``moe_attention`` and
    ``head_prediction`` off: ``trm_encoder.layer.{n_layers-1}.`` -> ``last_layer.``."""
    prefix = f"trm_encoder.layer.{n_layers - 1}."
    return {
        ("last_layer." + k[len(prefix) :]) if k.startswith(prefix) else k: v
        for k, v in state_dict.items()
    }


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def trained(env, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fame_run")
    config = tiny_config(
        env["root"], epochs=1, checkpoint_dir=str(workdir / "saved"), **E2E_SETTINGS
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)  # RecBole writes log/ and log_tensorboard/ under the working directory
        first = run("FAME", "synth", config_dict=dict(config, state="INFO"), saved=True)
        second = run("FAME", "synth", config_dict=config, saved=False)
    return config, first, second


def test_same_seed_identical_metrics(trained):
    _, first, second = trained
    assert first["test_result"] == second["test_result"]
    assert first["best_valid_result"] == second["best_valid_result"]


def test_trainer_logs_epoch_stats(trained):
    _, first, _ = trained
    with open(first["log_file"], encoding="utf-8") as f:
        text = f.read()
    assert "FAME statistics: gate=[" in text and "router=[[" in text
    # ... and returns them per epoch with the run's result (the benchmark records them)
    (stats,) = first["epoch_stats"]
    heads = first["config"]["n_heads"]
    assert stats["epoch"] == 0 and len(stats["gate"]) == heads
    assert sum(stats["gate"]) == pytest.approx(1.0, abs=1e-4)
    assert len(stats["router"]) == heads


def _tensorboard_writer_threads() -> int:
    return sum(type(t).__name__ == "_AsyncWriterThread" for t in threading.enumerate())


def test_run_leaves_no_tensorboard_writer_thread(env, tmp_path, monkeypatch):
    """``fit`` closes its tensorboard writer: every epoch scalar is in the event file when the
    run returns, and no writer thread is left to flush into a folder that may be gone."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    config = tiny_config(
        env["root"], epochs=1, checkpoint_dir=str(tmp_path / "saved"), **E2E_SETTINGS
    )
    before = _tensorboard_writer_threads()
    result = run("FAME", "synth", config_dict=config, saved=False)
    assert _tensorboard_writer_threads() == before
    (run_dir,) = glob.glob(str(tmp_path / "log_tensorboard" / "*"))
    events = EventAccumulator(run_dir)
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"Loss/Train", "Vaild_score"} <= tags  # RecBole's own tags (its spelling)
    assert {f"FAME/gate/{h}" for h in range(result["config"]["n_heads"])} <= tags


def test_tensorboard_writes_land_in_the_run_folder_after_a_directory_change(
    env, tmp_path, monkeypatch
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run_dir.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(run_dir)
    parts = build("FAME", env["root"], "synth", E2E_SETTINGS)
    trainer = get_trainer(parts.config, parts.model)
    monkeypatch.chdir(elsewhere)  # e.g. the next step of a script, or the next test
    trainer.tensorboard.add_scalar("check/value", 1.5, 0)
    trainer.tensorboard.close()
    (folder,) = glob.glob(str(run_dir / "log_tensorboard" / "*"))
    events = EventAccumulator(folder)
    events.Reload()
    assert [e.value for e in events.Scalars("check/value")] == [1.5]
    assert not (elsewhere / "log_tensorboard").exists()


def test_training_beats_untrained(env, trained):
    _, first, _ = trained
    parts = build("FAME", env["root"], "synth", E2E_SETTINGS)
    config, test_data, model = parts.config, parts.test_data, parts.model
    untrained = get_trainer(config, model).evaluate(test_data, load_best_model=False)
    assert first["test_result"]["ndcg@10"] > untrained["ndcg@10"] + 0.3


def test_save_load_identical_scores(env, trained, tmp_path):
    _, first, _ = trained
    parts = load_model(first["model_file"])
    config, model, test_data = parts.config, parts.model, parts.test_data
    result = get_trainer(config, model).evaluate(test_data, load_best_model=False)
    assert {k: round(float(v), 4) for k, v in result.items()} == first["test_result"]
    # state_dict round trip of a fresh (untrained) model: identical scores
    fresh = make(env, seed=5)
    path = tmp_path / "fame.pth"
    torch.save(fresh.state_dict(), path)
    reloaded = make(env, seed=6)
    reloaded.load_state_dict(torch.load(path))
    torch.testing.assert_close(
        full_scores(reloaded, env["batch"]), full_scores(fresh, env["batch"]), rtol=0, atol=0
    )
