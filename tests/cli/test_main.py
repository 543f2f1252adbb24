"""handgrad.cli.main: the parser's conveniences and the error → exit-code mapping."""

import pytest

import handgrad
from handgrad.cli import COMMANDS, ExitCode, build_parser, main


def test_every_subcommand_is_a_module_with_add_parser_and_run():
    names = [c.__name__.rsplit(".", 1)[1] for c in COMMANDS]
    assert names == ["train", "evaluate", "predict", "info", "gradcheck", "explain", "export",
                     "report", "serve"]
    assert all(callable(c.add_parser) and callable(c.run) for c in COMMANDS)
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == names


@pytest.mark.parametrize("where", ["before", "after"])
def test_traceback_is_accepted_before_and_after_the_subcommand(tmp_path, capsys, where):
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    argv = ["--traceback", "info", str(bad)] if where == "before" else ["info", str(bad),
                                                                      "--traceback"]
    assert main(argv) == ExitCode.DATA
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "handgrad: error:" in err


def test_without_traceback_an_error_is_one_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.safetensors")]) == ExitCode.DATA
    assert capsys.readouterr().err.strip().count("\n") == 0


@pytest.mark.parametrize("argv, suggestion", [
    (["train", "--hiden", "16"], "did you mean --hidden?"),
    (["train", "--batchsize=8"], "did you mean --batch-size?"),
    (["gradcheck", "--tolerence", "1e-3"], "did you mean --tolerance?"),
    (["train", "--hiden", "16", "--eopchs", "2"],
     "did you mean --hidden for --hiden, --epochs for --eopchs?"),
])
def test_a_mistyped_option_gets_a_suggestion(capsys, argv, suggestion):
    assert main(argv) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1  # one line, no usage dump
    assert "unrecognized arguments" in err and err.strip().endswith(suggestion)


def test_an_unknown_option_far_from_any_gets_no_suggestion(capsys):
    assert main(["train", "--frobnicate"]) == ExitCode.USAGE
    assert "did you mean" not in capsys.readouterr().err


def test_settings_that_cannot_work_together_are_worded_with_flags(capsys):
    code = main(["train", "--schedule", "cosine", "--warmup-epochs", "5", "--epochs", "5",
                 "--quiet"])
    assert code == ExitCode.USAGE
    assert capsys.readouterr().err.strip() == (
        "handgrad: error: --warmup-epochs 5 must be below --epochs 5")
    with pytest.raises(handgrad.ConfigError, match="warmup_epochs=5 must be below epochs=5"):
        handgrad.Trainer.from_config(handgrad.MLP(4, 3, 2), [[0.0] * 4] * 4, [0, 1, 0, 1],
                                     handgrad.TrainConfig(schedule="cosine", warmup_epochs=5,
                                                          epochs=5))
