"""handgrad gradcheck [MODEL]: a fresh network's flags are refused alongside a MODEL."""

import json

import pytest

from handgrad.cli import ExitCode, main


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gradcheck") / "m.safetensors"
    assert main(["train", "--epochs", "1", "--hidden", "8", "--quiet", "--out",
                 str(path)]) == ExitCode.OK
    return path


@pytest.mark.parametrize("flags, named", [
    (["--hidden", "32"], "--hidden describes"),
    (["--inputs", "64"], "--inputs describes"),
    (["--classes", "10"], "--classes describes"),
    (["--activation", "relu"], "--activation describes"),  # even the default, given
    (["--hidden", "32", "--activation", "tanh"], "--hidden, --activation describe"),
])
def test_fresh_network_flags_with_a_model_are_refused(model_file, capsys, flags, named):
    assert main(["gradcheck", str(model_file), *flags]) == ExitCode.USAGE
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing was checked
    err = captured.err
    assert err.count("\n") == 1 and err.startswith(f"handgrad: error: {named} the fresh "
                                                   f"network; {model_file} brings its own")


def test_the_flags_that_apply_to_a_model_are_taken(model_file, capsys):
    assert main(["gradcheck", str(model_file), "--batch-size", "4", "--max-checks", "5",
                 "--seed", "3", "--json"]) == ExitCode.OK
    assert json.loads(capsys.readouterr().out)["passed"] is True


def test_without_a_model_the_fresh_network_flags_shape_it(capsys):
    assert main(["gradcheck", "--inputs", "6", "--hidden", "5,4", "--classes", "3",
                 "--activation", "tanh"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "W1     (5, 6)" in out and "W3     (3, 4)" in out
