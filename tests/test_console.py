"""What the command line prints: a header, a line per epoch, the result, the warnings again."""

from __future__ import annotations

import logging
import re

import torch

from recbole_moe import cli, trainer
from recbole_moe.console import CONSOLE_ATTR, ConsoleFilter

LOAD_COL = "--load_col={'inter': ['user_id', 'item_id', 'timestamp']}"


def _argv(synth, tmp_path, *extra: str) -> list[str]:
    return [
        "--model",
        "SASRec",
        "--dataset",
        "synth",
        f"--data_path={synth.data_path}",
        "--epochs=2",
        "--hidden_size=16",
        "--inner_size=32",
        "--MAX_ITEM_LIST_LENGTH=20",
        f"--checkpoint_dir={tmp_path / 'ckpt'}",
        LOAD_COL,
        *extra,
    ]


def _lines(captured) -> list[str]:
    return [line for line in (captured.out + captured.err).splitlines() if line.strip()]


def test_a_run_prints_a_header_a_line_per_epoch_and_the_result_once(synth, tmp_path, capsys):
    assert cli.main(_argv(synth, tmp_path)) == 0
    lines = _lines(capsys.readouterr())
    assert len(lines) <= 30, "\n".join(lines)
    text = "\n".join(lines)
    assert re.search(r"SASRec on synth: prefix training .*[\d,]+ parameters, cpu", text)
    epochs = [line for line in lines if re.search(r"epoch \d \(of 2\), loss [\d.]+, valid", line)]
    assert len(epochs) == 2 and "best " in epochs[1] and re.search(r"no gain [01]/11", epochs[1])
    assert sum(line.startswith("test      :") for line in lines) == 1
    assert "OrderedDict" not in text and "General Hyper Parameters" not in text
    log_file = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("log "))
    log = open(log_file, encoding="utf-8").read()
    # the log file keeps RecBole's full output: config dump, model, epoch lines, results
    for kept in ("General Hyper Parameters", "learning_rate = ", "epoch 1 training", "test result"):
        assert kept in log, kept


def test_warnings_are_shown_and_repeated_at_the_end(synth, tmp_path, capsys):
    assert cli.main(_argv(synth, tmp_path, "--learnng_rate=0.01")) == 0
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert output.count("learnng_rate") == 2, output  # when it happens, and in the block
    block = captured.err[captured.err.index("warnings (") :]
    assert block.startswith("warnings (1, also in the log file):") and "learnng_rate" in block


def test_verbose_gives_recboles_full_output(synth, tmp_path, capsys):
    assert cli.main(_argv(synth, tmp_path, "--verbose")) == 0
    lines = _lines(capsys.readouterr())
    assert len(lines) > 100 and any("General Hyper Parameters" in line for line in lines)


def test_interrupt_prints_the_command_that_resumes_it(synth, tmp_path, capsys, monkeypatch):
    def interrupt(self, epoch_idx):  # right after epoch 0's resume checkpoint is written
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer.RecBoleMoeTrainer, "_check_time_budget", interrupt)
    assert cli.main(_argv(synth, tmp_path)) == 130
    err = capsys.readouterr().err
    match = re.search(r"interrupted; continue with: recbole-moe (.*) --resume=(\S+)", err)
    assert match, err
    assert (
        match.group(2).endswith("-last.pth")
        and torch.load(match.group(2), weights_only=False)["epoch"] == 0
    )
    monkeypatch.undo()
    assert cli.main(_argv(synth, tmp_path, f"--resume={match.group(2)}")) == 0
    assert "resumed from" in capsys.readouterr().err


def test_a_finished_runs_resume_checkpoint_is_its_last_epoch(synth, tmp_path, capsys):
    assert cli.main(_argv(synth, tmp_path)) == 0
    out = capsys.readouterr().out
    model_file = next(
        line.split(":", 1)[1].strip() for line in out.splitlines() if "checkpoint:" in line
    )
    last = torch.load(model_file[: -len(".pth")] + "-last.pth", weights_only=False)
    assert last["epoch"] == 1  # epochs 0 and 1 trained


def test_tune_hides_the_run_lines_but_not_warnings():
    quiet = ConsoleFilter(run_lines=False)
    shown = logging.LogRecord("x", logging.INFO, __file__, 0, "epoch 0", None, None)
    setattr(shown, CONSOLE_ATTR, True)
    warning = logging.LogRecord("x", logging.WARNING, __file__, 0, "careful", None, None)
    other = logging.LogRecord("x", logging.INFO, __file__, 0, "config dump", None, None)
    assert not quiet.filter(shown) and quiet.filter(warning) and not quiet.filter(other)
    assert ConsoleFilter().filter(shown) and not ConsoleFilter().filter(other)
    assert quiet.warnings == ["careful"]
