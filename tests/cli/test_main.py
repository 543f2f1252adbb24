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


@pytest.mark.parametrize("argv, suggestion", [
    (["predcit", "m.safetensors"], "did you mean predict?"),
    (["evalute", "m.safetensors"], "did you mean evaluate?"),
    (["explain", "--format", "htm"], "did you mean html?"),
])
def test_a_mistyped_command_or_choice_gets_a_suggestion(capsys, argv, suggestion):
    """Review finding 16: ``handgrad predcit`` named no command."""
    assert main(argv) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice" in err
    assert err.strip().endswith(suggestion)
    assert main(["frobnicate"]) == ExitCode.USAGE
    assert "did you mean" not in capsys.readouterr().err


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


# --------------------------------------------------------------------------- #
# A missing optional package: one exit code, whichever subcommand needs it
# --------------------------------------------------------------------------- #


def hide_packages(monkeypatch, *names):
    """Make ``import name`` fail (and ``find_spec`` find nothing), as when not installed;
    modules of handgrad's own that import them at their top are imported afresh."""
    import importlib.util
    import sys

    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name.split(".")[0] in names else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    for module in list(sys.modules):
        if module.split(".")[0] in names or module == "handgrad.serve.server":
            monkeypatch.delitem(sys.modules, module)
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` raises ImportError


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("missing") / "m.safetensors"
    assert main(["train", "--epochs", "1", "--hidden", "8", "--quiet", "--out",
                 str(path)]) == ExitCode.OK
    return path


def png(path):
    from PIL import Image

    Image.new("L", (28, 28), 255).save(path)
    return path


@pytest.mark.parametrize("hidden, argv, needs", [
    (["onnx"], ["export", "{model}", "{tmp}/m.onnx"], "onnx"),
    (["matplotlib"], ["train", "--epochs", "1", "--plot", "{tmp}/figs"], "matplotlib"),
    (["matplotlib"], ["report", "{model}", "--out", "{tmp}/report"], "matplotlib"),
    (["starlette"], ["serve", "{model}", "--port", "0"], "serve"),
    (["PIL"], ["predict", "{model}", "{png}"], "Pillow"),
    (["PIL"], ["explain", "{model}", "{png}"], "Pillow"),
    (["mpi4py"], ["train", "--epochs", "1", "--distributed"], "mpi4py"),
])
def test_a_missing_optional_package_exits_with_one_code(model_file, tmp_path, capsys,
                                                        monkeypatch, hidden, argv, needs):
    image = png(tmp_path / "digit.png")
    hide_packages(monkeypatch, *hidden)
    fill = {"model": str(model_file), "tmp": str(tmp_path), "png": str(image)}
    code = main([a.format(**fill) for a in argv])
    captured = capsys.readouterr()
    assert code == ExitCode.MISSING_PACKAGE == 5, captured.err
    err = captured.err
    assert err.count("\n") == 1 and err.startswith("handgrad: error: ")
    assert needs in err and "pip install 'handgrad[" in err
    assert "epoch" not in captured.out  # train refuses before training


def test_the_readme_documents_every_exit_code():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    line = readme[readme.index("exit codes: 0 ok"):][:400]
    for code in ExitCode:
        assert f"{int(code)} " in line, code.name


# --------------------------------------------------------------------------- #
# Library errors that name a parameter: worded with the flag, through an explicit table
# --------------------------------------------------------------------------- #


def test_every_parameter_in_the_table_is_a_flag_of_its_subcommand():
    from handgrad.cli._common import PARAMETER_FLAGS

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    options = {s for p in sub.choices.values() for a in p._actions for s in a.option_strings}
    assert set(PARAMETER_FLAGS.values()) <= options


def test_a_parameter_is_shown_as_its_flag_and_nothing_else_is_reworded(tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = "kind,a,b\n" + "".join(f"{'cd'[i % 2]},{i},{i % 3}\n" for i in range(30))
    (tmp_path / "index=2.csv").write_text(rows)  # a name that looks like a parameter
    assert main(["train", "--dataset", "index=2.csv", "--epochs", "1"]) == ExitCode.DATA
    err = capsys.readouterr().err
    assert err.startswith("handgrad: error: index=2.csv, line 2, kind: 'c' is not a number")
    assert err.strip().endswith("name it with --label-column 'kind'")
    assert "--index" not in err and "label_column" not in err


def test_serves_names_parameter_is_the_name_flag(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    handgrad.save(handgrad.MLP(4, 3, 2), path)
    code = main(["serve", str(path), str(path), "--name", "same", "--name", "same"])
    assert code == ExitCode.ERROR
    err = capsys.readouterr().err
    assert err.strip().endswith("name them apart with --name") and "--names" not in err


def test_a_parameter_no_flag_sets_keeps_its_python_spelling():
    from handgrad._errors import ParameterError
    from handgrad.cli._common import describe

    exc = ParameterError("give {sample_weight} or none", sample_weight="w")
    assert describe(exc) == "give sample_weight=w or none"
    exc = ParameterError("{warmup_epochs} must be below {epochs}", warmup_epochs=5, epochs=5)
    assert describe(exc) == "--warmup-epochs 5 must be below --epochs 5"
