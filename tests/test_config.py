"""TrainConfig: validation, its dict form, and the settings dicts of handgrad 0.1."""

import dataclasses

import pytest

from handgrad.config import ConfigError, TrainConfig

# What handgrad 0.1 stored as a run's "settings" (checkpoints and model files).
SETTINGS_0_1 = {
    "dataset": "digits", "label_column": "-1", "scaling": "divide", "val_fraction": 0.1,
    "hidden": [256], "activation": "relu", "dtype": "float32", "epochs": 30, "batch_size": 32,
    "optimizer": "adam", "lr": 0.001, "momentum": 0.0, "nesterov": False, "weight_decay": None,
    "seed": 0, "dropout": 0.0, "input_dropout": 0.0, "label_smoothing": 0.0, "max_norm": None,
    "schedule": "constant", "warmup_epochs": 0, "min_lr": 0.0, "step_size": 10, "gamma": 0.1,
    "early_stopping": False, "n_iter_no_change": 10, "tol": 0.0001, "augment": "none",
    "rotation": 10.0, "zoom": 0.1, "shear": 10.0, "translate": 2.0, "elastic_alpha": 34.0,
    "elastic_sigma": 4.0, "virtual_shards": 12,
}


def test_round_trip_through_its_dict():
    config = TrainConfig(hidden=(512, 256), lr=0.1, optimizer="sgd", out="/tmp/m.safetensors")
    again = TrainConfig.from_dict(config.to_dict())
    assert again == config and again.hidden == (512, 256)
    assert config.to_dict()["hidden"] == [512, 256]  # JSON values


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().epochs = 3
    assert TrainConfig().replace(epochs=3).epochs == 3


def test_reads_the_settings_of_handgrad_0_1():
    config = TrainConfig.from_dict(SETTINGS_0_1)
    assert config.lr == 0.001 and config.hidden == (256,)
    assert config.l2 == 0.0 and config.out is None and config.shuffle  # not in 0.1: defaults
    assert TrainConfig.from_training({"settings": SETTINGS_0_1}) == config
    assert TrainConfig.from_training({"config": config.to_dict()}) == config
    assert TrainConfig.from_training({"estimator": "handgrad.MLPClassifier"}) is None


def test_an_unknown_setting_says_how_to_fix():
    with pytest.raises(ValueError, match="unknown training settings 'warp_speed'.*upgrade"):
        TrainConfig.from_dict(SETTINGS_0_1 | {"warp_speed": 9})


@pytest.mark.parametrize("changes, message", [
    ({"epochs": -1}, "epochs must be an integer >= 0"),
    ({"batch_size": 0}, "batch_size"),
    ({"optimizer": "rmsprop"}, "optimizer must be one of sgd, adam, adamw"),
    ({"dropout": 1.0}, r"dropout must lie in \[0, 1\)"),
    ({"lr": 0}, "lr must be positive"),
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"hidden": (4, 0)}, "hidden sizes"),
    ({"nesterov": "yes"}, "nesterov must be True or False"),
    ({"on_divergence": "ignore"}, "on_divergence must be one of stop, backoff"),
])
def test_bad_values_name_the_setting(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_config_error_names_settings_for_any_front_end():
    exc = ConfigError("{warmup_epochs} must be below {epochs}; see {schedule}",
                      warmup_epochs=5, epochs=5, schedule=None)
    assert str(exc) == "warmup_epochs=5 must be below epochs=5; see schedule"
    assert exc.format(lambda s, v: s.upper() if v is None else f"{s.upper()}:{v}") == (
        "WARMUP_EPOCHS:5 must be below EPOCHS:5; see SCHEDULE")
