"""A user's first mistake ends in one clear line, never in a traceback.

Every bad input below (a setting, a data file, a checkpoint, a command-line form) must make the
command exit non-zero before any data is loaded, print no traceback and name the bad value.
The commands run in-process (``cli.main``) with captured output; one valid run is a real
subprocess, to see the terminal exactly as a user does.
"""

from __future__ import annotations

import os
import re
import sys
import zipfile

import pytest
import torch

from recbole_moe import cli

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"
GOOD_ROWS = "".join(f"{u}\t{i}\t{t}\n" for u in (1, 2, 3) for t, i in enumerate((1, 2, 3, 4)))
LOAD_COL = "--load_col={'inter': ['user_id', 'item_id', 'timestamp']}"


def tiny(data_path: str, dataset: str = "synth", model: str = "SASRec") -> list[str]:
    """A fast, valid command line on the synthetic data (``make_synthetic_dataset``, through
    the ``synth`` fixture); each case appends its bad part."""
    return [
        "--model",
        model,
        "--dataset",
        dataset,
        "--data_path",
        data_path,
        "--epochs=1",
        "--hidden_size=16",
        "--inner_size=32",
        "--MAX_ITEM_LIST_LENGTH=20",
        "--show_progress=false",
        "--state=WARNING",
        LOAD_COL,
    ]


# (id, extra arguments, substrings the one-line error must contain)
SETTINGS = [
    ("metric-misspelt", ["--metrics=['Hit', 'NDGC']"], ["'NDGC'", "did you mean 'NDCG'"]),
    ("metric-string", ["--metrics=Recal"], ["'Recal'", "'Recall'"]),
    ("metrics-mixed", ["--metrics=['Hit', 'AUC']"], ["AUC", "cannot be computed in the same"]),
    ("topk-zero", ["--topk=0"], ["topk=0", "positive integer"]),
    ("topk-negative", ["--topk=[5, -1]"], ["topk=[5, -1]"]),
    ("seed-text", ["--seed=abc"], ["seed='abc'", "integer"]),
    ("seed-negative", ["--seed", "-3"], ["seed=-3"]),
    (
        "split-mode",
        ["--eval_args={'split': {'XS': [0.8, 0.1, 0.1]}, 'order': 'TO'}"],
        ["'XS'", "RS", "LS", "TS"],
    ),
    (
        "split-ratios",
        ["--eval_args={'split': {'RS': [0.8, 0.2]}, 'order': 'TO'}"],
        ["[0.8, 0.2]", "three ratios"],
    ),
    (
        "split-leave-one",
        ["--eval_args={'split': {'LS': 'valid_test'}, 'order': 'TO'}"],
        ["'valid_test'", "valid_and_test"],
    ),
    (
        "order",
        ["--eval_args={'split': {'LS': 'valid_and_test'}, 'order': 'TX'}"],
        ["'TX'", "did you mean 'TO'"],
    ),
    (
        "group-by",
        ["--eval_args={'split': {'LS': 'valid_and_test'}, 'order': 'TO', 'group_by': 'item'}"],
        ["'item'", "'user' or 'none'"],
    ),
    (
        "eval-mode",
        ["--eval_args={'split': {'LS': 'valid_and_test'}, 'order': 'TO', 'mode': 'uni0'}"],
        ["'uni0'", "uniN"],
    ),
    (
        "eval-args-key",
        ["--eval_args={'split': {'LS': 'valid_and_test'}, 'ordre': 'TO'}"],
        ["'ordre'", "did you mean 'order'"],
    ),
    ("valid-metric-topk", ["--valid_metric", "NDCG@50"], ["valid_metric='NDCG@50'", "NDCG@10"]),
    (
        "valid-metric-name",
        ["--valid_metric=NDGC@10"],
        ["valid_metric='NDGC@10'", "did you mean 'NDCG@10'"],
    ),
    (
        "learner",
        ["--learner", "adamm"],
        ["learner='adamm'", "did you mean 'adam'", "silently train with Adam"],
    ),
    ("train-batch-size", ["--train_batch_size=0"], ["train_batch_size=0", ">= 1"]),
    ("eval-batch-size", ["--eval_batch_size", "many"], ["eval_batch_size='many'"]),
    ("epochs-float", ["--epochs=1.5"], ["epochs=1.5", "integer"]),
    ("stopping-step", ["--stopping_step=0"], ["stopping_step=0"]),
    ("gpu-id", ["--gpu_id=cuda:0"], ["gpu_id='cuda:0'", "'0,1'"]),
    ("state", ["--state=verbose"], ["state='verbose'", "info, debug"]),
    ("bool", ["--show_progress=maybe"], ["show_progress='maybe'", "true or false"]),
    ("interval", ["--user_inter_num_interval=[5,inf"], ["'[5,inf'", "not an interval"]),
    ("clip-grad-norm", ["--clip_grad_norm={'max_norm': -1}"], ["clip_grad_norm=", "max_norm"]),
    (
        "neg-sampling",
        ["--train_neg_sample_args={'distribution': 'gaussian'}"],
        ["'gaussian'", "uniform, popularity"],
    ),
    ("transform", ["--transform=mask"], ["transform='mask'", "mask_itemseq"]),
    ("rm-dup", ["--rm_dup_inter=all"], ["rm_dup_inter='all'", "first, last"]),
    ("encoding", ["--encoding=utf-9"], ["encoding='utf-9'"]),
    ("checkpoint-dir", ["--checkpoint_dir={file}"], ["checkpoint_dir=", "not a directory"]),
    ("data-path-mode", ["--data_path_mode=fast"], ["data_path_mode='fast'", "auto, recbole, lean"]),
    ("top-k-ours", ["--model", "HyMoERec", "--top_k=9"], ["top_k=9", "n_experts=4"]),
    # a model's own settings, checked from its class's declaration before any data loads
    (
        "fusion",
        ["--model", "HyMoERec", "--fusion=foo"],
        ["fusion='foo' (from the command line)", "adaptive, fixed, sum"],
    ),
    (
        "lb-type",
        ["--model", "HyMoERec", "--lb_type=foo"],
        ["lb_type='foo' (from the command line)", "entropy, switch"],
    ),
    (
        "moe-impl",
        ["--model", "HyMoERec", "--moe_impl=foo"],
        ["moe_impl='foo' (from the command line)", "auto, loop, dense"],
    ),
    (
        "mamba-backend",
        ["--model", "Mamba4Rec", "--mamba_backend=foo"],
        ["mamba_backend='foo' (from the command line)", "auto, mamba_ssm, torch"],
    ),
    (
        "fame-gate",
        ["--model", "FAME", "--gate=foo"],
        ["gate='foo' (from the command line)", "learned, uniform"],
    ),
    (
        "fame-fusion",
        ["--model", "FAME", "--fusion=foo"],
        ["fusion='foo' (from the command line)", "logits, probs"],
    ),
    ("device-absent", ["--device=cuda:99"], ["device='cuda:99'", "CUDA GPU"]),
    ("device-unknown", ["--device=tpu"], ["device='tpu'", "cpu, cuda or cuda:N"]),
    ("gpu-id-absent", ["--gpu_id=99"], ["gpu_id=", "GPU 99 is not there"]),
    ("nproc-zero", ["--nproc=0"], ["nproc=0", "integer >= 1"]),
    ("nproc-negative", ["--nproc=-2"], ["nproc=-2", "integer >= 1"]),
    ("data-path-file", ["--data_path={file}"], ["data_path=", "is a file"]),
    (
        "checkpoint-dir-unwritable",
        ["--checkpoint_dir=/proc/recbole-moe-saved"],
        ["checkpoint_dir='/proc/recbole-moe-saved'", "/proc"],
    ),
]

# (id, .inter content or None for no file, extra arguments, substrings)
FILES = [
    (
        "non-numeric-float",
        HEADER + GOOD_ROWS + "3\t5\tyesterday\n",
        [],
        ["line 14", "'yesterday'", "timestamp:float"],
    ),
    ("empty-user", HEADER + GOOD_ROWS + "\t5\t7\n", [], ["line 14", "user_id is empty"]),
    ("na-item", HEADER + GOOD_ROWS + "3\tNA\t7\n", [], ["line 14", "'NA'", "item_id:token"]),
    ("too-many-fields", HEADER + GOOD_ROWS + "3\t5\t7\t9\n", [], ["line 14", "4 fields"]),
    (
        "header-type",
        HEADER.replace(":float", ":date") + GOOD_ROWS,
        [],
        ["line 1", "'timestamp:date'"],
    ),
    ("empty-file", "", [], ["the file is empty"]),
    ("header-only", HEADER, [], ["no rows after the header"]),
    ("windows-line-ends", (HEADER + GOOD_ROWS).replace("\n", "\r\n"), [], ["Windows line ends"]),
    (
        "wrong-separator",
        (HEADER + GOOD_ROWS).replace("\t", ","),
        [],
        ["not separated by field_separator"],
    ),
    (
        "no-time-column",
        "user_id:token\titem_id:token\n"
        + "".join(f"{u}\t{i}\n" for u in (1, 2) for i in (1, 2, 3)),
        [],
        ["no 'timestamp' column", "TIME_FIELD", "sequential model SASRec"],
    ),
    (
        "time-not-loaded",
        HEADER + GOOD_ROWS,
        ["--load_col={'inter': ['user_id', 'item_id']}"],
        ["load_col=", "'timestamp'", "unloaded"],
    ),
    (
        "float-seq",
        "user_id:token\titem_id:token\ttimestamp:float\tv:float_seq\n1\t1\t0\t1 2\n1\t2\t1\t3 x\n",
        ["--load_col={'inter': ['user_id', 'item_id', 'timestamp', 'v']}"],
        ["line 3", "element 'x'", "v:float_seq"],
    ),
    ("dataset-missing", None, [], ["Dataset 'broken' was not found", "prepare"]),
]


def _bad_checkpoints(root) -> dict[str, str]:
    paths = {}
    whole = root / "whole.pth"
    torch.save(
        {
            "config": {"model": "SASRec", "dataset": "synth"},
            "state_dict": {},
            "payload": torch.zeros(4096),
        },
        whole,
    )
    data = whole.read_bytes()
    (root / "truncated.pth").write_bytes(data[: len(data) // 2])
    paths["truncated"] = str(root / "truncated.pth")
    (root / "text.pth").write_text("not a checkpoint\n")
    paths["text"] = str(root / "text.pth")
    (root / "empty.pth").write_bytes(b"")
    paths["empty"] = str(root / "empty.pth")
    torch.save({"weight": torch.zeros(2)}, root / "weights.pth")
    paths["weights"] = str(root / "weights.pth")
    with zipfile.ZipFile(root / "foreign.pth", "w") as archive:
        archive.writestr("readme.txt", "a zip, but no torch file")
    paths["foreign"] = str(root / "foreign.pth")
    paths["whole"] = str(whole)  # config and state_dict, but not what a resume reads
    paths["missing"] = str(root / "nowhere.pth")
    paths["directory"] = str(root)
    return paths


# (id, "recommend" or "resume", checkpoint key, substrings)
CHECKPOINTS = [
    ("recommend-truncated", "recommend", "truncated", ["truncated.pth is truncated"]),
    ("recommend-text", "recommend", "text", ["text.pth is not a PyTorch checkpoint"]),
    ("recommend-empty", "recommend", "empty", ["empty.pth is empty"]),
    (
        "recommend-weights-only",
        "recommend",
        "weights",
        ["weights.pth is not a RecBole", "no config, state_dict"],
    ),
    ("recommend-foreign-zip", "recommend", "foreign", ["foreign.pth cannot be read by torch"]),
    ("recommend-missing", "recommend", "missing", ["nowhere.pth does not exist"]),
    ("recommend-directory", "recommend", "directory", ["is a directory"]),
    ("resume-truncated", "resume", "truncated", ["truncated.pth is truncated"]),
    ("resume-text", "resume", "text", ["text.pth is not a PyTorch checkpoint"]),
    (
        "resume-incomplete",
        "resume",
        "whole",
        ["whole.pth is not a RecBole training", "epoch", "optimizer"],
    ),
]

# (id, the whole command line, substrings)
CLI_FORMS = [
    ("bare-flag-last", ["--epochs"], ["'--epochs' has no value"]),
    ("bare-flag-then-flag", ["--reproducibility", "--seed=1"], ["'--reproducibility' has no"]),
    ("no-dashes", ["epochs=2"], ["Unrecognised argument 'epochs=2'"]),
    ("empty-key", ["--=5"], ["the key is empty"]),
    ("given-twice", ["--seed=1", "--seed", "2"], ["--seed given twice"]),
    ("list-split-by-shell", ["--topk", "[5,", "10]"], ["Unrecognised argument '10]'"]),
    ("unknown-model", ["--model", "SASRecc"], ["Unknown model 'SASRecc'", "SASRec"]),
    (
        "missing-config-file",
        ["--config_files", "{tmp}/nope.yaml"],
        ["cannot read config file", "nope.yaml"],
    ),
    (
        "recommend-topk",
        ["recommend", "--checkpoint", "x.pth", "--user", "1", "--topk", "0"],
        ["--topk: 0"],
    ),
    ("recommend-no-user", ["recommend", "--checkpoint", "x.pth"], ["--user", "--history"]),
]


@pytest.fixture
def no_data_loaded(monkeypatch):
    """Records any start of data loading: every bad input must be refused before it."""
    import recbole_moe.data.lean as lean

    calls = []
    original = lean.load_data

    def load_data(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(lean, "load_data", load_data)
    return calls


def _with(base: list[str], extra: list[str]) -> list[str]:
    """``base + extra``, without the settings of ``base`` that ``extra`` gives again."""

    def key(arg: str) -> str:
        return arg.split("=", 1)[0]

    given = {key(arg) for arg in extra if arg.startswith("--")}
    kept, index = [], 0
    while index < len(base):
        arg = base[index]
        if key(arg) in given:
            index += 1 if "=" in arg else 2
            continue
        kept.append(arg)
        index += 1
    return kept + extra


def _assert_refused(code: int, captured, expected: list[str], loads: list) -> None:
    output = captured.out + captured.err
    assert code != 0, output
    assert "Traceback" not in output, output
    for part in expected:
        assert part in captured.err, f"{part!r} not in:\n{captured.err}"
    assert loads == [], "data loading started before the bad input was refused"


@pytest.mark.parametrize("extra, expected", [c[1:] for c in SETTINGS], ids=[c[0] for c in SETTINGS])
def test_bad_setting(extra, expected, synth, tmp_path, capsys, no_data_loaded):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    extra = [arg.replace("{file}", str(a_file)) for arg in extra]
    code = cli.main(_with(tiny(synth.data_path), extra))
    _assert_refused(code, capsys.readouterr(), expected, no_data_loaded)
    assert not (tmp_path / "log").exists() and not (tmp_path / "saved").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_on_a_machine_without_cuda_is_refused(synth, capsys, no_data_loaded):
    """RecBole would set the device from gpu_id and train on the CPU."""
    code = cli.main(tiny(synth.data_path) + ["--device=cuda"])
    _assert_refused(code, capsys.readouterr(), ["device='cuda'", "0 CUDA GPUs"], no_data_loaded)


def test_bad_setting_names_its_config_file(synth, tmp_path, capsys, no_data_loaded):
    config_file = tmp_path / "mine.yaml"
    config_file.write_text("learner: adamw2\nmetrics: [Hit, NDCG]\n")
    code = cli.main(tiny(synth.data_path) + ["--config_files", str(config_file)])
    _assert_refused(
        code,
        capsys.readouterr(),
        [f"learner='adamw2' (from config file {config_file})", "'adamw'"],
        no_data_loaded,
    )


@pytest.mark.parametrize(
    "content, extra, expected", [c[1:] for c in FILES], ids=[c[0] for c in FILES]
)
def test_bad_data_file(content, extra, expected, tmp_path, capsys, no_data_loaded, monkeypatch):
    monkeypatch.delenv("RECBOLE_MOE_RAW_DATA", raising=False)
    folder = tmp_path / "data" / "broken"
    folder.mkdir(parents=True)
    inter = folder / "broken.inter"
    if content is not None:
        inter.write_bytes(content.encode())
    code = cli.main(_with(tiny(str(tmp_path / "data"), dataset="broken"), extra))
    captured = capsys.readouterr()
    _assert_refused(code, captured, expected, no_data_loaded)
    assert str(inter) in captured.err
    assert not (tmp_path / "log").exists() and not (tmp_path / "saved").exists()


@pytest.mark.parametrize(
    "command, which, expected", [c[1:] for c in CHECKPOINTS], ids=[c[0] for c in CHECKPOINTS]
)
def test_bad_checkpoint(command, which, expected, synth, tmp_path, capsys, no_data_loaded):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    path = _bad_checkpoints(checkpoints)[which]
    if command == "recommend":
        argv = ["recommend", "--checkpoint", path, "--user", "1"]
    else:
        argv = tiny(synth.data_path) + [f"--resume={path}"]
    code = cli.main(argv)
    _assert_refused(code, capsys.readouterr(), expected, no_data_loaded)


@pytest.mark.parametrize(
    "argv, expected", [c[1:] for c in CLI_FORMS], ids=[c[0] for c in CLI_FORMS]
)
def test_bad_command_line(argv, expected, synth, tmp_path, capsys, no_data_loaded):
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    if argv[0] != "recommend":
        argv = _with(tiny(synth.data_path), argv)
    code = cli.main(argv)
    _assert_refused(code, capsys.readouterr(), expected, no_data_loaded)


def test_distributed_run_is_checked_before_any_worker_starts(synth, capsys, monkeypatch):
    from recbole_moe import distributed

    launched = []
    monkeypatch.setattr(distributed, "run_from_settings", lambda *args: launched.append(args))
    code = cli.main(tiny(synth.data_path) + ["--nproc=2", "--learner=adamm"])
    _assert_refused(code, capsys.readouterr(), ["learner='adamm'"], [])
    assert launched == []


def test_enough_bad_inputs_are_covered():
    assert len(SETTINGS) + 1 + len(FILES) + len(CHECKPOINTS) + len(CLI_FORMS) >= 30


def test_key_value_and_key_equals_value_are_the_same():
    assert cli.parse_overrides(["--data_path", "D", "--epochs", "2", "--lr=-1", "--x", "-0.5"]) == {
        "data_path": "D",
        "epochs": "2",
        "lr": "-1",
        "x": "-0.5",
    }
    assert cli.parse_overrides(["--topk", "[5, 10]"]) == cli.parse_overrides(["--topk=[5, 10]"])


def test_load_model_and_recommender_refuse_a_bad_checkpoint(tmp_path):
    from recbole_moe.checkpoint import CheckpointError
    from recbole_moe.quick_start import load_model
    from recbole_moe.recommend import Recommender

    paths = _bad_checkpoints(tmp_path)
    with pytest.raises(CheckpointError, match="is truncated"):
        load_model(paths["truncated"])
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        Recommender.load(paths["text"])


def test_unexpected_error_is_one_line_with_the_traceback_in_a_log(
    synth, tmp_path, capsys, monkeypatch
):
    """The last line of defence, for an error in training (the run's log keeps the
    traceback) and before it (the run log is discarded; the traceback goes to an error log)."""
    import recbole_moe.data.lean as lean
    import recbole_moe.quick_start as quick_start

    def broken_trainer(config, model):
        raise RuntimeError("the trainer broke")

    monkeypatch.setattr(quick_start, "get_trainer", broken_trainer)
    code = cli.main(tiny(synth.data_path))
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("recbole-moe: error")]
    assert "training SASRec failed with RuntimeError: the trainer broke" in line
    assert "--debug" in line
    log_file = re.search(r"the full traceback is in (\S+?)[;)]", line).group(1)
    assert str(tmp_path / "log") in log_file
    assert "Traceback" in open(log_file, encoding="utf-8").read()

    def broken_loading(*args, **kwargs):
        raise RuntimeError("loading broke")

    monkeypatch.setattr(lean, "load_data", broken_loading)
    for path in (tmp_path / "log").rglob("*.log"):
        path.unlink()
    code = cli.main(tiny(synth.data_path) + ["--debug"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err  # --debug shows it
    error_log = re.search(r"the full traceback is in (\S+?)\)", err).group(1)
    assert "loading broke" in open(error_log, encoding="utf-8").read()
    os.remove(error_log)
    assert list((tmp_path / "log").rglob("*.log")) == []  # the failed run's log is discarded


def test_valid_run_prints_no_warning(run_tiny_cli, tmp_path):
    """A real ``recbole-moe`` process, every setting as ``--key value``: RecBole's internal
    warnings stay off the terminal and go to the run's log file."""
    program = [sys.executable, os.path.join(REPO_ROOT, "run_recbole_moe.py")]
    proc = run_tiny_cli(program, tmp_path, separate=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert [line for line in output.splitlines() if re.search("warning", line, re.I)] == []
    log_file = next(
        line.split(":", 1)[1].strip() for line in proc.stdout.splitlines() if line.startswith("log")
    )
    log = open(os.path.join(tmp_path, log_file), encoding="utf-8").read()
    assert "not shown on the terminal" in log and "GradScaler" in log


def test_a_spent_time_budget_exits_3_naming_the_resume_checkpoint(synth, tmp_path, capsys):
    argv = [a for a in tiny(synth.data_path) if a != "--epochs=1"]
    argv += ["--epochs=2", f"--checkpoint_dir={tmp_path / 'ckpt'}"]
    code = cli.main(argv + ["--time_budget_minutes=0"])
    err = capsys.readouterr().err
    assert code == 3
    (line,) = [line for line in err.splitlines() if line.startswith("recbole-moe:")]
    assert "stopped before epoch 1" in line and "error" not in line
    resume = re.search(r"--resume=(\S+)", line).group(1)
    assert resume.endswith("-last.pth") and resume.startswith(str(tmp_path / "ckpt"))
    assert cli.main(argv + [f"--resume={resume}"]) == 0


def test_resume_with_changed_settings_is_refused_before_data_loads(
    synth, tmp_path, capsys, no_data_loaded
):
    """A run trained with the sequence objective, learning rate 0.001 and seed 2020, resumed
    with another value of one of them: refused naming the old and the new value."""
    trained = _with(
        tiny(synth.data_path),
        [
            "--epochs=2",
            "--train_objective=sequence",
            "--learning_rate=0.001",
            "--seed=2020",
            f"--checkpoint_dir={tmp_path / 'saved'}",
        ],
    )
    assert cli.main(trained) == 0
    capsys.readouterr()
    no_data_loaded.clear()
    (last,) = (tmp_path / "saved").glob("*-last.pth")
    changes = [
        ("--learning_rate=0.05", "learning_rate 0.001 -> 0.05"),
        ("--seed=7", "seed 2020 -> 7"),
        ("--train_objective=prefix", "train_objective 'sequence' -> 'prefix'"),
    ]
    for change, expected in changes:
        code = cli.main(_with(trained, [change, f"--resume={last}"]))
        _assert_refused(
            code,
            capsys.readouterr(),
            [expected, "start a new run (without --resume)"],
            no_data_loaded,
        )


# --------------------------------------------------------------------------------------------
# A benchmark call is checked whole before its first run
# --------------------------------------------------------------------------------------------


@pytest.fixture
def no_run_started(monkeypatch):
    """Records every benchmark run that starts: a bad plan must start none."""
    from recbole_moe.benchmark import runner

    started = []
    monkeypatch.setattr(runner, "run_one", lambda *args, **kwargs: started.append(args))
    return started


def _benchmark(synth, tmp_path, *extra: str) -> list[str]:
    return [
        "benchmark",
        "--seeds",
        "0",
        "--out",
        str(tmp_path / "out"),
        f"--data_path={synth.data_path}",
        "--epochs=1",
        *extra,
    ]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (
            ["--models", "SASRec", "SASRecc", "--datasets", "synth"],
            ["SASRecc on synth", "Unknown model 'SASRecc'", "Did you mean 'SASRec'"],
        ),
        (["--models", "SASRec", "--datasets", "synth", "nope"], ["SASRec on nope", "'nope'"]),
        (
            ["--models", "SASRec", "GRU4Rec", "--datasets", "synth", "--learner=adamm"],
            ["2 run(s)", "learner='adamm'"],
        ),
    ],
    ids=["model", "dataset", "override"],
)
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_a_benchmark_plan_is_checked_whole_before_its_first_run(
    extra, expected, dry_run, synth, tmp_path, capsys, no_run_started, monkeypatch
):
    monkeypatch.delenv("RECBOLE_MOE_RAW_DATA", raising=False)
    argv = _benchmark(synth, tmp_path, *extra) + (["--dry-run"] if dry_run else [])
    code = cli.main(argv)
    captured = capsys.readouterr()
    _assert_refused(code, captured, expected, [])
    (line,) = captured.err.strip().splitlines()
    assert "nothing was run" in line
    assert no_run_started == [] and not (tmp_path / "out").exists()


def test_a_missing_plan_file_is_one_line(synth, tmp_path, capsys, no_run_started):
    code = cli.main(_benchmark(synth, tmp_path, "--plan", str(tmp_path / "missing.yaml")))
    captured = capsys.readouterr()
    _assert_refused(code, captured, ["missing.yaml cannot be read"], [])
    assert len(captured.err.strip().splitlines()) == 1 and "unexpected" not in captured.err


def test_merge_refuses_a_missing_or_empty_source(tmp_path, capsys):
    good = tmp_path / "good"
    good.mkdir()
    (good / "runs.jsonl").write_text('{"key": "SASRec/synth/seed0", "status": "ok"}\n')
    (tmp_path / "empty").mkdir()
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "runs.jsonl").write_text("")
    out = tmp_path / "out"
    cases = {"missing": "not a folder", "empty": "holds no runs.jsonl", "blank": "is empty"}
    for name, reason in cases.items():
        source = str(tmp_path / name)
        code = cli.main(["benchmark", "merge", str(out), str(good), source])
        captured = capsys.readouterr()
        _assert_refused(code, captured, [source, reason], [])
        assert not (out / "runs.jsonl").exists()  # the good source is not merged either


# --------------------------------------------------------------------------------------------
# Your own dataset trains as given
# --------------------------------------------------------------------------------------------

TINY_MODEL = ["--hidden_size=16", "--inner_size=32", "--n_layers=1", "--show_progress=false"]


def _one_user_per_line(path, users: int = 40, seed: int = 0) -> str:
    """A ``Beauty.txt``-style file: ``user item item ...`` per line, oldest first."""
    import random

    rng = random.Random(seed)
    lines = []
    for user in range(1, users + 1):
        start = rng.randint(1, 30)
        lines.append(" ".join(map(str, [user] + [start + i for i in range(rng.randint(4, 9))])))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_custom_dataset_prepared_from_one_user_per_line_trains_with_the_protocol(
    tmp_path, capsys
):
    """No --load_col, no metrics: the time field is loaded (one log line) and the protocol's
    leave-one-out Hit/NDCG/MRR@5/10/20 are reported."""
    source = _one_user_per_line(tmp_path / "Mine.txt")
    data = str(tmp_path / "data")
    assert cli.main(["prepare", "--dataset", "mine", "--source", source, "--data_path", data]) == 0
    out = capsys.readouterr().out
    assert "prepared as a custom dataset" in out and "expected" not in out
    argv = ["--model", "SASRec", "--dataset", "mine", "--data_path", data, "--epochs=1"]
    assert cli.main(argv + ["--train_objective=sequence"] + TINY_MODEL) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    (best,) = [line for line in out.splitlines() if line.startswith("best valid:")]
    (test,) = [line for line in out.splitlines() if line.startswith("test ")]
    names = [f"{m}@{k}" for m in ("hit", "ndcg", "mrr") for k in (5, 10, 20)]
    for line in (best, test):
        assert re.findall(r"(\w+@\d+): [\d.]+", line) == names, line
    log_file = re.search(r"^log\s+: (\S+)", out, re.M).group(1)
    log = open(log_file, encoding="utf-8").read()
    assert len(re.findall(r"load_col: the time field 'timestamp' of \S+ is loaded", log)) == 1


def test_a_dataset_without_a_property_file_gets_the_protocol_unless_the_user_sets_others(synth):
    from recbole_moe.config import Config

    config = Config("BPR", "synth", config_dict={"data_path": synth.data_path})
    assert config["metrics"] == ["Hit", "NDCG", "MRR"] and config["topk"] == [5, 10, 20]
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}
    assert config["eval_args"]["order"] == "TO" and config["eval_args"]["mode"]["test"] == "full"
    assert config["load_col"]["inter"] == ["user_id", "item_id", "timestamp"]
    mine = Config(
        "BPR",
        "synth",
        config_dict={"data_path": synth.data_path, "metrics": ["Recall"], "topk": [3]},
    )
    assert mine["metrics"] == ["Recall"] and mine["topk"] == [3]


def test_a_general_model_on_a_dataset_without_times_holds_out_from_a_random_order(tmp_path):
    from recbole_moe.config import Config

    (tmp_path / "nt").mkdir()
    rows = "".join(f"{u}\t{u + i}\n" for u in range(1, 9) for i in range(5))
    (tmp_path / "nt" / "nt.inter").write_text("user_id:token\titem_id:token\n" + rows)
    config = Config("BPR", "nt", config_dict={"data_path": str(tmp_path)})
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}
    assert config["eval_args"]["order"] == "RO"
    assert any("no 'timestamp' column" in note for note in config.notes)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("beautyy", "did you mean 'beauty'?"),
        ("ml-1n", "did you mean 'ml-1m'?"),
        ("Beauty", "did you mean 'beauty'?"),
        ("mystuff", "prepared as a custom dataset, with no published statistics to compare\n"),
    ],
)
def test_prepare_of_an_unknown_name_says_custom_and_suggests_a_near_known_one(
    name, expected, tmp_path, capsys
):
    source = _one_user_per_line(tmp_path / "raw.txt", users=5)
    code = cli.main(["prepare", "--dataset", name, "--source", source, "--data_path", "data"])
    out = capsys.readouterr().out
    assert code == 0 and f"'{name}' is not a known dataset" in out and expected in out
    assert "expected" not in out
    assert (tmp_path / "data" / name / f"{name}.inter").is_file()


@pytest.mark.parametrize("length", [1, 2])
def test_users_too_short_for_leave_one_out_are_refused_before_training(
    length, tmp_path, capsys, no_data_loaded
):
    folder = tmp_path / "data" / "short"
    folder.mkdir(parents=True)
    rows = "".join(f"{u}\t{u + t}\t{t}\n" for u in range(1, 6) for t in range(length))
    (folder / "short.inter").write_text(HEADER + rows)
    code = cli.main(
        _with(
            tiny(str(tmp_path / "data"), dataset="short"), ["--topk=[1]", "--valid_metric=NDCG@1"]
        )
    )
    _assert_refused(
        code,
        capsys.readouterr(),
        ["5 of 5 users", "fewer than 3 interactions", 'user_inter_num_interval="[3,inf)"'],
        no_data_loaded,
    )
    assert not (tmp_path / "saved").exists()


def test_some_users_too_short_for_leave_one_out_are_warned_about(tmp_path):
    from recbole_moe.quick_start import check_run
    from recbole_moe.testing import tiny_config

    folder = tmp_path / "some"
    folder.mkdir()
    rows = "".join(f"{u}\t{t}\t{t}\n" for u in range(1, 9) for t in range(1 if u < 3 else 6))
    (folder / "some.inter").write_text(HEADER + rows)
    settings = tiny_config(str(tmp_path), topk=[5], valid_metric="NDCG@5")
    config = check_run("SASRec", "some", config_dict=settings)
    assert [w for w in config.count_warnings if "2 of 8 users" in w and "fewer than 3" in w]


def test_fewer_items_than_the_largest_topk_are_refused_before_training(
    tmp_path, capsys, no_data_loaded
):
    """Full ranking of 6 items cannot fill a top 20 (torch.topk failed in evaluation)."""
    folder = tmp_path / "data" / "few"
    folder.mkdir(parents=True)
    rows = "".join(f"{u}\t{(u + t) % 6 + 1}\t{t}\n" for u in range(1, 9) for t in range(5))
    (folder / "few.inter").write_text(HEADER + rows)
    code = cli.main(_with(tiny(str(tmp_path / "data"), dataset="few"), ["--topk=[10, 20]"]))
    _assert_refused(
        code,
        capsys.readouterr(),
        ["topk=[10, 20] (from the command line)", "has 6 items", "up to 6"],
        no_data_loaded,
    )


def test_a_users_own_ml_100k_is_read_from_data_path(synth, tmp_path):
    import shutil

    from recbole_moe.quick_start import check_run

    own = tmp_path / "mine"
    shutil.copytree(os.path.join(synth.data_path, "synth"), own / "ml-100k")
    os.rename(own / "ml-100k" / "synth.inter", own / "ml-100k" / "ml-100k.inter")
    settings = {"data_path": str(own), "load_col": {"inter": ["user_id", "item_id", "timestamp"]}}
    config = check_run("SASRec", "ml-100k", config_dict=settings)
    assert config["data_path"] == str(own / "ml-100k")
    elsewhere = check_run("SASRec", "ml-100k", config_dict={"data_path": str(tmp_path / "none")})
    assert "dataset_example" in elsewhere["data_path"]
    assert any("has no ml-100k.inter" in note for note in elsewhere.notes)  # logged, not silent


def test_recommend_from_another_folder_and_with_data_path(synth, tmp_path, capsys, monkeypatch):
    """The checkpoint keeps the absolute data path training resolved (here from a relative
    --data_path); moved data is found with --data_path, and a missing one names the option."""
    import shutil

    shutil.copytree(synth.data_path, tmp_path / "data")
    argv = _with(tiny("data"), ["--checkpoint_dir=saved"])
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    checkpoint = re.search(r"^checkpoint: (\S+)", out, re.M).group(1)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    ask = ["recommend", "--checkpoint", checkpoint, "--user", "1", "--topk", "5", "--json"]
    assert cli.main(ask) == 0, capsys.readouterr().err
    first = capsys.readouterr().out
    shutil.move(tmp_path / "data", tmp_path / "moved")
    code = cli.main(ask)
    err = capsys.readouterr().err
    assert code == 2 and "--data_path" in err and "synth.inter does not exist" in err
    assert cli.main(ask + ["--data_path", str(tmp_path / "moved")]) == 0
    assert capsys.readouterr().out == first


# --------------------------------------------------------------------------------------------
# A prefix-regime run on a CPU estimated at more than an hour an epoch is warned about
# --------------------------------------------------------------------------------------------


def test_the_prefix_epoch_estimate_counts_weights_positions_and_the_item_softmax(monkeypatch):
    from recbole_moe import quick_start

    class Tiny(torch.nn.Module):
        n_items = 10

        def __init__(self) -> None:
            super().__init__()
            self.items = torch.nn.Embedding(10, 4)  # not counted as weights
            self.layer = torch.nn.Linear(4, 4)  # 16 + 4 weights

    monkeypatch.setattr(quick_start, "CPU_FLOPS_PER_THREAD", 1000.0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    seconds = quick_start.prefix_epoch_seconds({"MAX_ITEM_LIST_LENGTH": 5}, Tiny(), samples=100)
    assert seconds == pytest.approx(100 * (6 * 20 * 5 + 6 * 4 * 10) / 2000.0)


@pytest.mark.parametrize("objective", ["prefix", "sequence"])
def test_a_slow_prefix_run_on_a_cpu_is_warned_about(objective, synth, monkeypatch, caplog):
    from recbole_moe import quick_start
    from recbole_moe.testing import tiny_config

    # as slow as a long-sequence run on a large dataset: the tiny data's estimate is > 1 h
    monkeypatch.setattr(quick_start, "CPU_FLOPS_PER_THREAD", 1e3)
    settings = tiny_config(synth.data_path, train_objective=objective, state="INFO")
    with caplog.at_level("WARNING"):
        quick_start.prepare_run("SASRec", "synth", config_dict=settings)
    warned = [r.getMessage() for r in caplog.records if "estimated at about" in r.getMessage()]
    if objective == "sequence":
        assert warned == []
    else:
        (message,) = warned
        assert "train_objective=prefix on the CPU" in message
        assert "--train_objective=sequence" in message
