"""``recbole-moe tune``: search spaces, studies that resume, shared workers, pruning, bad input."""

from __future__ import annotations

import csv
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

import recbole_moe  # noqa: E402
from recbole_moe.testing import tiny_config  # noqa: E402
from recbole_moe.trainer import RecBoleMoeTrainer  # noqa: E402
from recbole_moe.tuning import SpaceError, load_space, main  # noqa: E402
from recbole_moe.tuning.study import cli_value  # noqa: E402

#: Settings searched by the tests; dropped from the fixed tiny settings.
SEARCHED = ("learning_rate", "hidden_dropout_prob")


def fixed_settings(data_path: str, **extra) -> dict:
    config = tiny_config(data_path, **extra)
    for key in SEARCHED:
        config.pop(key, None)
    return config


def as_argv(settings: dict) -> list[str]:
    return [f"--{key}={cli_value(value)}" for key, value in settings.items()]


def write(path, text: str) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


def load(storage: str, name: str):
    return optuna.load_study(study_name=name, storage=storage)


# --------------------------------------------------------------------------------------------
# Search spaces
# --------------------------------------------------------------------------------------------

RECBOLE_SPACE = """\
# a comment, then RecBole's own examples (recbole/properties/hyper.test)
learning_rate loguniform -8,0
embedding_size choice [64,96,128]
train_batch_size choice [512, 1024, 2048]
mlp_hidden_size choice ['[64,64,64]','[128,128]']
dropout_prob uniform 0.1,0.5
n_experts quniform 1, 10, 3
hidden_dropout_prob quniform 0.1 0.5 0.1
topk choice [[5, 10], [20]]
"""


def _hyperopt_quniform_support(low: float, high: float, q: float) -> set:
    """hyperopt's ``hp.quniform``: ``np.round(uniform(low, high) / q) * q``, by brute force."""
    x = np.linspace(low, high, 200001)
    return {round(float(v), 9) for v in np.round(x / q) * q}


def test_recbole_format_space_file_is_parsed_exactly(tmp_path):
    space = load_space(write(tmp_path / "space.hyper", RECBOLE_SPACE))
    params = {p.name: p for p in space}
    assert list(params) == [
        "learning_rate",
        "embedding_size",
        "train_batch_size",
        "mlp_hidden_size",
        "dropout_prob",
        "n_experts",
        "hidden_dropout_prob",
        "topk",
    ]
    assert [p.kind for p in space] == [
        "loguniform",
        "choice",
        "choice",
        "choice",
        "uniform",
        "quniform",
        "quniform",
        "choice",
    ]
    assert params["learning_rate"].args == (-8.0, 0.0)  # log-space bounds, as hp.loguniform
    assert params["embedding_size"].args == (64, 96, 128)
    assert params["train_batch_size"].args == (512, 1024, 2048)
    assert params["mlp_hidden_size"].args == ("[64,64,64]", "[128,128]")
    assert params["dropout_prob"].args == (0.1, 0.5)
    assert params["topk"].args == ([5, 10], [20])
    assert params["n_experts"].where.endswith("space.hyper:7")
    # quniform: exactly the values round(x / q) * q takes for x in [low, high]
    assert params["n_experts"].grid_values() == [0, 3, 6, 9]
    assert set(params["n_experts"].grid_values()) == _hyperopt_quniform_support(1, 10, 3)
    assert params["hidden_dropout_prob"].grid_values() == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert {
        round(v, 9) for v in params["hidden_dropout_prob"].grid_values()
    } == _hyperopt_quniform_support(0.1, 0.5, 0.1)
    assert all(isinstance(v, int) for v in params["n_experts"].grid_values())

    # What trials receive: 300 random draws stay inside each distribution's support.
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = []
    for _ in range(300):
        trial = study.ask()
        drawn.append(space.suggest(trial))
        study.tell(trial, 0.0)
    lr = [d["learning_rate"] for d in drawn]
    assert math.exp(-8) <= min(lr) and max(lr) <= 1.0 and min(lr) < 0.01 < max(lr)
    assert {d["embedding_size"] for d in drawn} == {64, 96, 128}
    assert {d["mlp_hidden_size"] for d in drawn} == {"[64,64,64]", "[128,128]"}
    assert {tuple(d["topk"]) for d in drawn} == {(5, 10), (20,)}  # lists come back as lists
    assert all(0.1 <= d["dropout_prob"] <= 0.5 for d in drawn)
    assert {d["n_experts"] for d in drawn} == {0, 3, 6, 9}
    assert {d["hidden_dropout_prob"] for d in drawn} == {0.1, 0.2, 0.3, 0.4, 0.5}

    # The YAML forms (RecBole's params_dict, and one entry per parameter) read the same.
    grouped = load_space(
        write(
            tmp_path / "grouped.yaml",
            """\
loguniform: {learning_rate: [-8, 0]}
choice: {embedding_size: [64, 96, 128]}
quniform: {n_experts: [1, 10, 3]}
""",
        )
    )
    per_param = load_space(
        write(
            tmp_path / "per_param.yml",
            """\
learning_rate: {loguniform: [-8, 0]}
embedding_size: choice [64,96,128]
n_experts: {quniform: [1, 10, 3]}
""",
        )
    )
    expected = [params[n].describe() for n in ("learning_rate", "embedding_size", "n_experts")]
    assert grouped.describe() == expected
    assert per_param.describe() == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("n_experts choice\n", "space.hyper:1: expected 'name type values'"),
        (
            "n_experts choise [2,4]\n",
            "space.hyper:1: unknown type 'choise' for 'n_experts' (did you mean 'choice'?)",
        ),
        ("# ok\n\nlearning_rate loguniform -8\n", "space.hyper:3: loguniform needs low and high"),
        (
            "dropout_prob uniform 0.5,0.1\n",
            "space.hyper:1: empty range: uniform for 'dropout_prob'",
        ),
        (
            "learning_rate loguniform -2,-8\n",
            "empty range: loguniform for 'learning_rate' has log bounds low -2 above high -8",
        ),
        ("n_experts choice []\n", "space.hyper:1: empty range: choice for 'n_experts'"),
        ("n_experts quniform 2,8,0\n", "quniform step q for 'n_experts' must be > 0"),
        ("n_experts choice [2,\n", "space.hyper:1: choice values for 'n_experts' must be a list"),
        (
            "top_k choice [1]\ntop_k choice [2]\n",
            "space.hyper:2: 'top_k' is defined twice (also at space.hyper:1)",
        ),
        ("\n# nothing\n", "no parameter to search"),
    ],
)
def test_malformed_space_names_file_and_line(tmp_path, text, message):
    with pytest.raises(SpaceError) as info:
        load_space(write(tmp_path / "space.hyper", text))
    assert message in str(info.value).replace(str(tmp_path) + os.sep, "")


def test_loguniform_with_real_bounds_is_flagged(tmp_path):
    space = load_space(write(tmp_path / "space.hyper", "learning_rate loguniform 0.0001,0.01\n"))
    (warning,) = space.warnings()
    assert "natural-log bounds" in warning and "-9.21,-4.605" in warning


# --------------------------------------------------------------------------------------------
# Bad input: one line, exit code 2, nothing written
# --------------------------------------------------------------------------------------------


def _bad_storage_urls():
    urls = [
        (
            "sqlite:////no/such/folder/study.db",
            "is unreachable: folder /no/such/folder does not exist",
        )
    ]
    try:
        import psycopg2  # noqa: F401

        urls.append(
            (
                "postgresql://tune:secret@127.0.0.1:1/tune",
                "storage postgresql://tune:***@127.0.0.1:1/tune is unreachable",
            )
        )
    except ImportError:
        pass
    return urls


def hymoerec_study(path: str) -> list[str]:
    """``recbole-moe tune`` arguments of a HyMoERec study on the synthetic data over ``path``."""
    return ["--model", "HyMoERec", "--dataset", "synth", "--params", path]


@pytest.mark.parametrize(
    "space, extra, message",
    [
        (
            "n_expert choice [2,4]\n",
            [],
            "unknown parameter 'n_expert': HyMoERec's resolved config has no such setting; did you "
            "mean 'n_experts'?",
        ),
        (
            "n_experts choice [2,4]\nlearning_rate loguniform -8\n",
            [],
            "space.hyper:2: loguniform needs low and high, found '-8'",
        ),
        ("hidden_dropout_prob uniform 0.4,0.2\n", [], "space.hyper:1: empty range"),
        ("n_experts choice [2,4]\n", ["--n_experts=4"], "'n_experts' is searched and also fixed"),
        (
            "learning_rate loguniform -8,-4\n",
            ["--sampler", "grid"],
            "grid search needs a finite set of values, but 'learning_rate' is loguniform",
        ),
    ]
    + [
        ("n_experts choice [2,4]\n", ["--storage", url], message)
        for url, message in _bad_storage_urls()
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(synth, tmp_path, capsys, space, extra, message):
    path = write(tmp_path / "space.hyper", space)
    before = set(os.listdir(tmp_path))
    code = main(
        [
            *hymoerec_study(path),
            "--out",
            str(tmp_path / "out"),
            *extra,
            *as_argv(fixed_settings(synth.data_path)),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("recbole-moe tune: error: ")
    assert message in err
    assert "secret" not in err  # a password in a storage URL is never printed
    assert set(os.listdir(tmp_path)) == before  # no results folder, log or database


# --------------------------------------------------------------------------------------------
# Studies
# --------------------------------------------------------------------------------------------

SPACE = """\
learning_rate loguniform -7,-4
hidden_dropout_prob quniform 0.1,0.3,0.1
n_experts choice [2,4]
"""


def test_three_trial_study_writes_tables_plots_and_a_rerun_command(synth, tmp_path):
    path = write(tmp_path / "space.hyper", SPACE)

    def three_trials() -> dict:
        return recbole_moe.tune(
            "HyMoERec",
            "synth",
            path,
            trials=3,
            sampler="random",
            sampler_seed=0,
            config_dict=fixed_settings(synth.data_path),
            out=str(tmp_path / "study"),
        )

    info = three_trials()
    assert info["states"] == {"complete": 3}
    assert info["n_trials"] == 3
    best = info["best"]
    assert set(best["params"]) == {"learning_rate", "hidden_dropout_prob", "n_experts"}
    assert best["valid"]["ndcg@10"] == pytest.approx(best["value"])
    assert "ndcg@10" in best["test"]

    out = tmp_path / "study"
    assert (out / "study.db").is_file()
    with open(out / "trials.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert [row["trial"] for row in table] == ["0", "1", "2"]
    assert {"NDCG@10", "learning_rate", "n_experts", "valid_ndcg@10", "test_ndcg@10"} <= set(
        table[0]
    )
    markdown = (out / "trials.md").read_text(encoding="utf-8")
    assert f"## Best trial: #{best['trial']}" in markdown and best["command"] in markdown
    assert (
        json.loads((out / "best.json").read_text(encoding="utf-8"))["best"]["trial"]
        == best["trial"]
    )
    pytest.importorskip("matplotlib")
    assert (out / "history.png").is_file() and (out / "importance.png").is_file()
    assert not list(out.glob("*.tmp-*"))  # atomic writes leave no temporary file
    assert not (out / "saved").exists()  # finished trials leave no checkpoint behind

    # The printed command reruns the best trial: same settings, same validation score.
    from recbole_moe.cli import parse_overrides

    words = shlex.split(best["command"])
    assert words[:5] == ["recbole-moe", "--model", "HyMoERec", "--dataset", "synth"]
    rerun = recbole_moe.run(
        "HyMoERec", "synth", config_dict=parse_overrides(words[5:]), saved=False
    )
    assert rerun["best_valid_score"] == pytest.approx(best["value"])

    # A second call with the same settings has nothing left to do.
    again = three_trials()
    assert again["n_trials"] == 3 and again["best"] == info["best"]


def test_a_study_killed_mid_run_resumes_without_rerunning_finished_trials(synth, tmp_path):
    path = write(tmp_path / "space.hyper", SPACE)
    out = tmp_path / "study"
    storage = f"sqlite:///{out / 'study.db'}"
    argv = [
        *hymoerec_study(path),
        "--trials",
        "3",
        "--sampler",
        "random",
        "--sampler_seed",
        "1",
        "--pruner",
        "none",
        "--out",
        str(out),
        "--no_plots",
        *as_argv(fixed_settings(synth.data_path, epochs=8)),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    output = tmp_path / "worker.out"  # kept: a failure shows what the worker printed
    with open(output, "wb") as sink:
        worker = subprocess.Popen(
            [sys.executable, "-m", "recbole_moe.tuning", *argv],
            env=env,
            cwd=str(tmp_path),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )

    def printed() -> str:
        return output.read_text(errors="replace")[-4000:]

    deadline = time.time() + 300
    try:
        # Kill the worker once trial 0 is finished and trial 1 has validated two epochs.
        while True:
            assert worker.poll() is None, (
                f"the worker ended (status {worker.returncode}) before it could be killed:\n"
                + printed()
            )
            assert time.time() < deadline, "the first trials took too long:\n" + printed()
            time.sleep(0.2)
            if not (out / "study.db").is_file():
                continue
            try:
                trials = load(storage, "HyMoERec-synth").get_trials()
            except Exception:  # noqa: BLE001 - the study may not exist yet
                continue
            if (
                len(trials) >= 2
                and trials[0].state.name == "COMPLETE"
                and len(trials[1].intermediate_values) >= 2
            ):
                break
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    before = load(storage, "HyMoERec-synth").get_trials()
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"], printed()
    first = before[0]

    assert main(argv) == 0  # the same command again
    after = load(storage, "HyMoERec-synth").get_trials()
    states = [t.state.name for t in after]
    assert states.count("COMPLETE") == 3
    assert after[0].datetime_complete == first.datetime_complete  # not run again
    assert after[0].value == first.value
    assert after[1].state.name == "FAIL"  # the killed trial...
    (retry,) = [t for t in after if t.user_attrs.get("retry_of") == 1]
    assert retry.params == before[1].params  # ...is retried with its own parameters
    assert retry.user_attrs.get("resumed_from")  # from its last checkpoint
    assert retry.user_attrs["epochs"] < 8  # so only the remaining epochs were trained
    assert len({t.user_attrs.get("retry_of", t.number) for t in after}) == 3
    # the rerun's sampler does not replay the first run's draws (same --sampler_seed)
    assert not any("duplicate_of" in t.user_attrs for t in after)
    trained = [
        t
        for t in after
        if t.params == first.params
        and "duplicate_of" not in t.user_attrs
        and t.state.name == "COMPLETE"
    ]
    assert trained == [after[0]]


def test_a_new_study_database_opened_by_two_processes_at_once_is_not_an_error(
    tmp_path, monkeypatch
):
    """Another process (a second worker, or a reader of the study) that creates the tables of a
    new SQLite study first makes this one's insert of the version row fail; the database is
    ready then and opening it again works (before, the worker exited with status 2)."""
    import sqlalchemy

    from recbole_moe.tuning import study as study_module

    real = optuna.storages.RDBStorage
    calls = []

    def raced(url, **kwargs):
        calls.append(url)
        if len(calls) == 1:
            real(url)  # the other process, first: tables and version row made
            raise sqlalchemy.exc.IntegrityError(
                "INSERT INTO alembic_version (version_num) VALUES (?)",
                {},
                Exception("UNIQUE constraint failed: alembic_version.version_num"),
            )
        return real(url, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", raced)
    monkeypatch.setattr(study_module.time, "sleep", lambda seconds: None)
    storage = study_module.open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    monkeypatch.undo()
    assert len(calls) == 2
    optuna.create_study(study_name="s", storage=storage)
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["s"]


def test_two_worker_processes_share_one_study(synth, tmp_path):
    path = write(tmp_path / "space.hyper", SPACE)
    info = recbole_moe.tune(
        "HyMoERec",
        "synth",
        path,
        trials=4,
        n_jobs=2,
        sampler="random",
        sampler_seed=0,
        pruner="none",
        plots=False,
        config_dict=fixed_settings(synth.data_path),
        out=str(tmp_path / "study"),
    )
    assert info["worker_exit_codes"] == [0, 0]
    trials = load(f"sqlite:///{tmp_path / 'study' / 'study.db'}", "HyMoERec-synth").get_trials()
    assert all(t.state.name == "COMPLETE" for t in trials)
    # Both processes ran trials of the one study; at most one extra trial when both finish
    # at the same moment.
    assert 4 <= len(trials) <= 5
    assert len({t.user_attrs["pid"] for t in trials}) == 2
    assert os.getpid() not in {t.user_attrs["pid"] for t in trials}
    assert sorted(t.number for t in trials) == list(range(len(trials)))


def test_a_trial_reporting_a_bad_value_is_pruned(synth, tmp_path, monkeypatch):
    # The validation score of a trial is what its learning rate says: 0.5, 0.1 or NaN.
    scores = {0.001: 0.5, 0.002: 0.1, 0.003: float("nan")}

    def scored(self, valid_data, show_progress=False):
        score = scores[self.config["learning_rate"]]
        return score, {"ndcg@10": score}

    monkeypatch.setattr(RecBoleMoeTrainer, "_valid_epoch", scored)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="prune", storage=storage, direction="maximize")
    for lr in (0.001, 0.002, 0.003, 0.001):
        study.enqueue_trial({"learning_rate": lr})
    path = write(tmp_path / "space.hyper", "learning_rate choice [0.001, 0.002, 0.003]\n")
    info = recbole_moe.tune(
        "SASRec",
        "synth",
        path,
        trials=4,
        study="prune",
        storage=storage,
        pruner_startup_trials=1,
        plots=False,
        out=str(tmp_path / "out"),
        config_dict=fixed_settings(synth.data_path, epochs=3),
    )
    trials = load(storage, "prune").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "PRUNED", "COMPLETE"]
    assert trials[0].value == 0.5 and trials[0].user_attrs["epochs"] == 3
    # 0.1 is below the median (0.5) of the earlier trial at epoch 0: stopped there
    assert trials[1].user_attrs["pruned_at_epoch"] == 0 and trials[1].user_attrs["epochs"] == 1
    assert trials[2].user_attrs["pruned_at_epoch"] == 0  # NaN
    # the same settings as trial 0 take its result instead of training again
    assert trials[3].user_attrs["duplicate_of"] == 0 and trials[3].value == 0.5
    assert info["best"]["trial"] == 0
    assert "pruned at epoch 0" in (tmp_path / "out" / "trials.md").read_text(encoding="utf-8")


def test_only_a_trial_whose_worker_is_gone_is_reaped(tmp_path):
    """A running trial is failed and queued again only when its worker process is gone; one
    whose worker has not finished writing its attributes is left alone (a live worker's trial
    was once failed between its "pid" and "pid_started" attributes)."""
    from recbole_moe.tuning import study as study_module

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = study_module._process_started(sleeper.pid)
        storage = f"sqlite:///{tmp_path / 'reap.db'}"
        study = optuna.create_study(study_name="reap", storage=storage)
        machine = study_module._machine()
        cases = {
            "starting": {"machine": machine, "pid": sleeper.pid},
            "live": {"machine": machine, "pid": sleeper.pid, "pid_started": live},
            "pid reused": {"machine": machine, "pid": sleeper.pid, "pid_started": live - 100},
            "other machine": {"machine": "elsewhere", "pid": sleeper.pid, "pid_started": 0.0},
        }
        for name, attrs in cases.items():
            trial = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
            trial.set_user_attr("case", name)
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
        lines: list[str] = []
        study_module.reap_dead_trials(study, lines.append)
        states = {
            t.user_attrs["case"]: t.state.name for t in study.get_trials() if "case" in t.user_attrs
        }
        assert states == {
            "starting": "RUNNING",
            "live": "RUNNING",
            "pid reused": "FAIL",
            "other machine": "RUNNING",
        }
        assert len(lines) == 1 and "gone" in lines[0]
        waiting = [t for t in study.get_trials() if t.state.name == "WAITING"]
        assert len(waiting) == 1  # the failed trial's parameters are queued again
    finally:
        sleeper.kill()
        sleeper.wait()
