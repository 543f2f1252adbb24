"""handgrad.datasets.prepare_data and its distributed counterpart: train/validation/test
rows from one call, split alike in one process and over ranks."""

import numpy as np
import pytest

from handgrad._errors import ParameterError
from handgrad.datasets import (
    PreparedData,
    load_dataset,
    prepare_data,
    stratified_split,
    validation_split,
)


def test_prepare_data_holds_out_a_seeded_stratified_validation_split():
    ds = load_dataset("digits")
    data = prepare_data("digits", val_fraction=0.2, seed=4, progress=False)
    assert isinstance(data, PreparedData)
    train, val = stratified_split(ds.y_train, 0.2, 4)
    np.testing.assert_array_equal(data.x_train, ds.x_train[train])
    np.testing.assert_array_equal(data.y_val, ds.y_train[val])
    np.testing.assert_array_equal(data.x_test, ds.x_test)
    assert data.n_train == len(train) and data.n_classes == 10 and data.classes == ds.classes
    # every class on both sides, in proportion
    assert set(np.unique(data.y_val)) == set(range(10))
    again = prepare_data("digits", val_fraction=0.2, seed=4, progress=False)
    np.testing.assert_array_equal(again.y_train, data.y_train)
    other = prepare_data("digits", val_fraction=0.2, seed=5, progress=False)
    assert not np.array_equal(other.y_train, data.y_train)


def test_without_a_fraction_every_training_row_trains():
    data = prepare_data("digits", progress=False)
    assert data.x_val is None and data.y_val is None
    assert data.n_train == len(data.x_train) == len(load_dataset("digits").x_train)


def test_a_csv_records_its_label_column(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n" + "".join(f"{rng.normal()},{rng.normal()},{i % 2}\n"
                                            for i in range(60)))
    data = prepare_data(path, val_fraction=0.25, seed=0)
    assert data.label_column.name == "label" and data.label_column.index == 2
    assert len(data.x_val) + data.n_train + len(data.x_test) == 60


def test_a_fraction_that_leaves_no_validation_row_names_the_parameter():
    y = np.repeat(np.arange(3), 1)  # one row per class: none can be held out
    with pytest.raises(ParameterError) as info:
        validation_split(y, 0.1, 0)
    assert info.value.parameter == "val_fraction"
    assert str(info.value) == ("val_fraction=0.1 leaves no validation rows; use a larger "
                               "fraction or 0")


class Comm:
    """The little of an MPI communicator that preparing a shard uses."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def Barrier(self):
        pass


@pytest.mark.parametrize("size, virtual_shards", [(1, 1), (2, 4), (3, 6)])
def test_the_ranks_shares_make_up_the_one_process_rows(size, virtual_shards):
    from handgrad.distributed import prepare_shard  # imports mpi4py only to communicate

    whole = prepare_data("digits", val_fraction=0.1, seed=2, progress=False)
    shares = [prepare_shard("digits", Comm(r, size), batch_size=32,
                            virtual_shards=virtual_shards, val_fraction=0.1, seed=2,
                            progress=False) for r in range(size)]
    assert all(s.n_train == whole.n_train and s.classes == whole.classes for s in shares)
    for part in ("train", "val", "test"):
        for kind in "xy":
            joined = np.concatenate([getattr(s, f"{kind}_{part}") for s in shares])
            np.testing.assert_array_equal(joined, getattr(whole, f"{kind}_{part}"))
