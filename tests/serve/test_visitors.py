"""Per-visitor model copies: bounded in number and bytes, expired when idle."""

import pytest

from handgrad.serve.visitors import VisitorCopies


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_least_recently_used_copy_goes_when_the_count_is_reached():
    v = VisitorCopies(max_copies=2, max_bytes=10_000, ttl=60)
    a = v.get_or_create("a", "m", object, 100)
    v.get_or_create("b", "m", object, 100)
    assert v.get("a", "m") is a  # a is now the most recent
    v.get_or_create("c", "m", object, 100)
    assert len(v) == 2 and v.get("b", "m") is None and v.get("a", "m") is a
    assert v.evicted == 1


def test_the_byte_bound_holds():
    v = VisitorCopies(max_copies=100, max_bytes=250, ttl=60)
    for name in "abcde":
        v.get_or_create(name, "m", object, 100)
        assert v.nbytes <= 250
    assert len(v) == 2
    assert v.get_or_create("big", "m", object, 251) is None  # can never fit


def test_idle_copies_expire():
    clock = Clock()
    v = VisitorCopies(max_copies=10, max_bytes=10_000, ttl=60, clock=clock)
    v.get_or_create("a", "m", object, 100)
    clock.now = 30
    v.get_or_create("b", "m", object, 100)
    clock.now = 61
    assert v.sweep() == 1 and v.get("a", "m") is None and v.get("b", "m") is not None
    clock.now = 200
    assert v.get("b", "m") is None and len(v) == 0 and v.nbytes == 0 and v.expired == 2


def test_copies_are_per_visitor_and_model_and_can_be_discarded():
    v = VisitorCopies()
    a = v.get_or_create("x", "m1", object, 1)
    b = v.get_or_create("x", "m2", object, 1)
    assert a is not b and v.get_or_create("x", "m1", object, 1) is a
    assert v.discard("x", "m1") and not v.discard("x", "m1")
    assert v.get("x", "m1") is None and v.get("x", "m2") is b


def test_zero_copies_means_no_learning():
    assert VisitorCopies(max_copies=0).get_or_create("a", "m", object, 1) is None


@pytest.mark.parametrize("kwargs", [{"max_copies": -1}, {"max_bytes": -5}, {"ttl": 0}])
def test_bounds_are_checked(kwargs):
    with pytest.raises(ValueError):
        VisitorCopies(**kwargs)
