"""One command-line tool: subcommands, suggestions for unknown ones, --version."""

from __future__ import annotations

import pytest

import recbole_moe
from recbole_moe import benchmark, cli


def test_version_names_this_package_and_its_stack(capsys):
    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"recbole-moe {recbole_moe.__version__} (")
    assert "recbole 1.2.1" in out and "torch " in out


@pytest.mark.parametrize(
    "word, suggestion", [("recomend", "recommend"), ("benchmrk", "benchmark"), ("tuen", "tune")]
)
def test_an_unknown_command_is_answered_with_the_closest_one(capsys, word, suggestion):
    assert cli.main([word, "--model", "SASRec"]) == 2
    err = capsys.readouterr().err
    assert f"unknown command '{word}'; did you mean '{suggestion}'?" in err
    assert "--model" not in err.split("unknown command")[0]  # not argparse's usage error


def test_a_word_far_from_every_command_lists_them(capsys):
    assert cli.main(["xyzzy"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'xyzzy' (commands: train, prepare, benchmark, report, merge" in err


@pytest.mark.parametrize("name, target", [("report", "report_main"), ("merge", "merge_main")])
def test_report_and_merge_are_subcommands_of_the_tool(monkeypatch, name, target):
    seen = []
    monkeypatch.setattr(benchmark, target, lambda argv: seen.append(argv) or 0)
    assert cli.main([name, "results/x", "more"]) == 0
    assert seen == [["results/x", "more"]]


@pytest.mark.parametrize(
    "typed, meant", [("sasrec", "SASRec"), ("lightgbm", "LightGBM"), ("SASRecc", "SASRec")]
)
def test_a_model_name_in_other_letter_case_is_suggested_first(typed, meant):
    from recbole_moe.errors import UnknownModelError
    from recbole_moe.model import get_model

    with pytest.raises(UnknownModelError, match=f"Did you mean '{meant}'"):
        get_model(typed)
