"""handgrad._errors.ParameterError: errors that name the caller's parameters as data."""

import pickle

import pytest

from handgrad import ConfigError, DataError
from handgrad._errors import ParameterError


def test_a_parameter_is_data_and_each_front_end_words_it():
    exc = ParameterError("{path}: pick one with {index}", index="N")
    assert isinstance(exc, ValueError)
    assert exc.parameter == "index" and exc.parameters == {"index": "N"}
    assert str(exc) == "{path}: pick one with index=N"  # braces that are no field stay
    assert exc.format(lambda p, v: f"--{p} {v}") == "{path}: pick one with --index N"


def test_a_parameter_without_a_value_is_its_name_alone():
    exc = ParameterError("an INPUT, {index} or {label} needs a MODEL", index=None, label=None)
    assert str(exc) == "an INPUT, index or label needs a MODEL"
    assert exc.parameter == "index"


def test_without_parameters_the_message_is_the_text_as_given():
    exc = DataError("x.csv: {'a': 1} is not a number")
    assert str(exc) == "x.csv: {'a': 1} is not a number" and exc.parameter is None


def test_config_errors_are_parameter_errors_with_their_settings():
    exc = ConfigError("{warmup_epochs} must be below {epochs}", warmup_epochs=5, epochs=5)
    assert isinstance(exc, ParameterError) and exc.settings == exc.parameters
    assert str(exc) == "warmup_epochs=5 must be below epochs=5"


@pytest.mark.parametrize("exc", [
    DataError("a.csv: name it with {label_column}", label_column="'kind'"),
    ConfigError("{augment} needs image data", augment=None),
    DataError("plain"),
])
def test_they_survive_pickling(exc):
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc) and str(back) == str(exc)
    assert back.parameters == exc.parameters


def test_a_csv_refusal_names_label_column_as_data(tmp_path):
    from handgrad.datasets import read_csv

    path = tmp_path / "t.csv"
    path.write_text("kind,a,b\n" + "".join(f"{'cd'[i % 2]},{i},{i % 3}\n" for i in range(30)))
    with pytest.raises(DataError) as info:
        read_csv(path)
    assert info.value.parameters == {"label_column": "'kind'"}
    assert str(info.value).endswith("name it with label_column='kind'")


def test_a_trace_argument_error_says_which_parameter():
    import handgrad
    from handgrad.tracing import TraceArgumentError, explain

    with pytest.raises(TraceArgumentError) as info:
        explain(None, "digit.png")
    assert set(info.value.parameters) == {"index", "label"}
    model = handgrad.MLP(4, 3, 2)
    with pytest.raises(TraceArgumentError) as info:
        handgrad.tracing.resolve_label(model, 7)
    assert info.value.parameter == "label"
