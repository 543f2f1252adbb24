"""handgrad._words: counts with their nouns."""

import pytest

from handgrad._words import count


@pytest.mark.parametrize("n, noun, plural, expected", [
    (0, "epoch", None, "0 epochs"), (1, "epoch", None, "1 epoch"), (2, "epoch", None, "2 epochs"),
    (1, "class", "classes", "1 class"), (5, "class", "classes", "5 classes"),
    (1, "test example", None, "1 test example"),
])
def test_count(n, noun, plural, expected):
    assert count(n, noun, plural) == expected


def test_a_report_on_one_example_says_example():
    from handgrad.metrics import classification_report, format_report

    text = format_report(classification_report([1], [1], ["a", "b"]))
    assert text.splitlines()[0] == "accuracy 1.0000 on 1 example"
