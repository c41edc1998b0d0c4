"""The argument parser: each subcommand runs its command, with the documented defaults."""

from __future__ import annotations

import json

import pytest

from regserve.server.cli import commands, server_commands
from regserve.server.cli.parser import DEFAULT_SERVER, build_parser, wants_json


@pytest.mark.parametrize(
    ("argv", "func"),
    [
        (["serve"], server_commands.cmd_serve),
        (["gateway"], server_commands.cmd_gateway),
        (["train", "f.csv", "--model", "m", "--target", "y"], commands.cmd_train),
        (["predict", "--model", "m", "--features", "1"], commands.cmd_predict),
        (["info", "--model", "m"], commands.cmd_info),
        (["health"], commands.cmd_health),
        (["models"], commands.cmd_models),
        (["versions", "--model", "m"], commands.cmd_versions),
        (["promote", "--model", "m", "v2"], commands.cmd_promote),
        (["rollback", "--model", "m"], commands.cmd_rollback),
        (["freeze", "--model", "m", "v1"], commands.cmd_freeze),
        (["unfreeze", "--model", "m", "v1"], commands.cmd_unfreeze),
        (["delete", "--model", "m", "v1"], commands.cmd_delete),
        (["split", "--model", "m", "v1=1"], commands.cmd_split),
        (["status"], commands.cmd_status),
    ],
)
def test_each_subcommand_runs_its_command(argv, func):
    args = build_parser().parse_args(argv)
    assert args.command == argv[0] and args.func is func


def test_client_commands_share_the_connection_flags():
    args = build_parser().parse_args(["models"])
    assert (args.server, args.timeout, args.tls_ca, args.tls_cert, args.tls_key) == (
        DEFAULT_SERVER,
        600.0,
        None,
        None,
        None,
    )
    args = build_parser().parse_args(["versions", "--server", "h:1", "--timeout", "2", "--model", "m"])
    assert (args.server, args.timeout, args.model) == ("h:1", 2.0, "m")


def test_health_answers_within_three_seconds_by_default():
    assert build_parser().parse_args(["health"]).timeout == 3.0


def test_the_token_default_is_read_from_the_environment_when_the_parser_is_built(monkeypatch):
    monkeypatch.delenv("REGSERVE_TOKEN", raising=False)
    assert build_parser().parse_args(["models"]).token is None
    monkeypatch.setenv("REGSERVE_TOKEN", "secret")
    assert build_parser().parse_args(["models"]).token == "secret"
    assert build_parser().parse_args(["models", "--token", "other"]).token == "other"


def test_train_leaves_unset_options_to_the_server():
    args = build_parser().parse_args(["train", "f.csv", "--model", "m", "--target", "y", "--no-promote", "--cv", "3"])
    assert (args.kind, args.solver, args.chunk_rows) == ("linear", "auto", 65536)
    assert (args.promote, args.cv, args.alpha, args.standardize, args.promotion_gate) == (False, 3, None, None, False)


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "--model", "m"],
        ["predict", "--model", "m", "--csv", "f.csv", "--features", "1"],
        ["versions"],
        ["train", "f.csv", "--model", "m"],
        ["bogus"],
        [],
    ],
)
def test_incomplete_or_conflicting_flags_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(argv)
    assert caught.value.code == 2
    assert "usage: regserve" in capsys.readouterr().err


def test_split_takes_weights_or_clear():
    args = build_parser().parse_args(["split", "--model", "m", "v1=90", "v2=10", "--reason", "canary"])
    assert (args.weights, args.clear, args.reason) == (["v1=90", "v2=10"], False, "canary")
    args = build_parser().parse_args(["split", "--model", "m", "--clear"])
    assert (args.weights, args.clear) == ([], True)


def test_status_names_no_model_by_default():
    assert build_parser().parse_args(["status"]).model == ""
    assert build_parser().parse_args(["status", "--model", "m"]).model == "m"


@pytest.mark.parametrize("command", ["train f.csv --model m --target y", "predict --model m --features 1", "models"])
def test_client_commands_print_text_unless_asked_for_json(command):
    argv = command.split()
    assert build_parser().parse_args(argv).output == "text"
    for flags in (["--output", "json"], ["-o", "json"], ["--output=json"], ["-ojson"]):
        assert build_parser().parse_args([*argv, *flags]).output == "json"
        assert wants_json([*argv, *flags])
    assert not wants_json([*argv, "--output", "text"]) and not wants_json(["predict", "--model", "json"])


def test_an_unknown_output_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["models", "--output", "yaml"])
    assert caught.value.code == 2 and "invalid choice: 'yaml'" in capsys.readouterr().err


def test_usage_errors_are_json_when_json_was_asked_for(capsys):
    with pytest.raises(SystemExit) as caught:
        build_parser(errors_as_json=True).parse_args(["versions", "-o", "json"])
    assert caught.value.code == 2
    error = json.loads(capsys.readouterr().err)
    assert (error["code"], error["reason"]) == (None, "USAGE")
    assert error["message"] == "regserve versions: the following arguments are required: --model"


_TRAIN = ["train", "f.csv", "--model", "m", "--target", "y"]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["train", "f.csv", "--model", "m", "--target", "y", "--feature-columns", ""],
            "--feature-columns: names nothing",
        ),
        (["train", "f.csv", "--model", "m", "--target", "y", "--feature-columns", "a,"], "empty name at position 2"),
        (["import", "f.json", "--model", "m", "--feature-names", "a,,c"], "empty name at position 2: 'a,,c'"),
        (["predict", "--model", "m", "--features", "1,2,abc"], "--features: value 3, 'abc', is not a number"),
    ],
)
def test_lists_with_empty_or_bad_entries_are_usage_errors(argv, said, capsys):
    # An empty entry used to be dropped unseen (all columns trained on for ''), a bad number to end in a traceback.
    with pytest.raises(SystemExit) as caught:
        build_parser(errors_as_json=True).parse_args([*argv, "-o", "json"])
    error = json.loads(capsys.readouterr().err)
    assert caught.value.code == 2 and error["reason"] == "USAGE" and said in error["message"]


def test_lists_and_rows_are_parsed_entry_by_entry():
    args = build_parser().parse_args(["train", "f.csv", "--model", "m", "--target", "y", "--feature-columns", " a, b"])
    assert args.feature_columns == ["a", "b"]
    assert build_parser().parse_args(["predict", "--model", "m", "--features=-1.5, 2,3e2"]).features == [
        -1.5,
        2.0,
        300.0,
    ]


def test_the_connection_flags_may_come_before_the_command(target, capsys):
    from regserve.server.cli import _command_first, main

    assert main(["models", "--server", target]) == 0
    after = capsys.readouterr().out
    assert main(["--server", target, "models"]) == 0
    assert capsys.readouterr().out == after
    # A flag's value that names a command is still the flag's.
    assert _command_first(["--tls-server-name", "gateway", "info"], {"gateway", "info"})[0] == "info"
    assert main(["--server", target, "-o", "json", "models"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(_json_models(main, target, capsys))


def _json_models(main, target, capsys) -> str:
    assert main(["models", "--server", target, "-o", "json"]) == 0
    return capsys.readouterr().out
