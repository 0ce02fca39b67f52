"""The one checker of untrusted mappings (schema.py) that checkpoints, stored recipes and manifest entries go through:
what each field check takes and refuses, and that a whole mapping is either returned as it was or refused in one
line."""

import math

import pytest
from hypothesis import given, settings, strategies as st

from mnist_edge.errors import MnistEdgeError
from mnist_edge.schema import (
    boolean, check_fields, choice, int_in, integer, list_of, map_of, number, number_in, optional, shown, text,
)  # fmt: skip

HUGE = 10**400  # an int that no float holds: math.isfinite(HUGE) raises OverflowError

REFUSED = {
    "int_in(0, 10)": (int_in(0, 10), [True, False, -1, 11, 1.0, "1", None, HUGE, float("nan")]),
    "int_in()": (int_in(), [2**63, -1, 3.0]),
    "number_in()": (number_in(), [True, float("nan"), float("inf"), -float("inf"), HUGE, -HUGE, "1.5", None, [1.0]]),
    "number_in(0, 1)": (number_in(0, 1), [-0.1, 1.5, 2, float("nan")]),
    "number_in(0, 1, low_open)": (number_in(0, 1, low_open=True), [0, 0.0]),
    "optional(int_in(0, 10))": (optional(int_in(0, 10)), [True, 11, "x"]),
    "text(4)": (text(4), ["12345", 1, None, b"ab"]),
    "choice": (choice(("sgd", "adam")), ["lbfgs", "SGD", 1, None, ["sgd"]]),
    "boolean": (boolean, [0, 1, "true", None]),
    "list_of(int_in, 2, 1)": (list_of(int_in(0, 9), 2, at_least=1), [[], [1, 2, 3], [1, True], (1,), {"a": 1}]),
    "map_of(text, number_in, 2)": (
        map_of(text(), number_in(), 2), [{1: 1.0}, {"a": float("nan")}, {"a": 1, "b": 2, "c": 3}, [1]],
    ),
}
PASSED = {
    "int_in(0, 10)": [0, 10, 5],
    "int_in()": [0, 2**63 - 1],
    "number_in()": [0, -1.5, 1e308, 10**300, -(10**300)],
    "number_in(0, 1)": [0, 1, 0.5],
    "number_in(0, 1, low_open)": [1e-300, 1],
    "optional(int_in(0, 10))": [None, 3],
    "text(4)": ["", "1234"],
    "choice": ["sgd", "adam"],
    "boolean": [True, False],
    "list_of(int_in, 2, 1)": [[0], [9, 9]],
    "map_of(text, number_in, 2)": [{}, {"a": 1, "b": -2.5}],
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_each_check_refuses_saying_what_a_value_must_be(name):
    check, refused = REFUSED[name]
    for value in refused:
        problem = check(value)
        assert isinstance(problem, str) and "must be" in problem and "\n" not in problem, (name, value, problem)
    for value in PASSED[name]:
        assert check(value) is None, (name, value)


def test_a_nested_problem_names_the_item_or_key():
    assert list_of(int_in(0, 9), 5)([1, 2, 30]) == "item 2 must be a whole number from 0 to 9"
    assert (
        map_of(text(), number_in())({"loss": float("inf")})
        == "'loss' must be a finite number at least -inf and at most inf"
    )
    assert map_of(text(), number_in())({7: 1.0}).startswith("key 7 must be a string")


def test_integer_and_number_say_what_is_wrong_even_with_an_int_no_float_holds():
    with pytest.raises(MnistEdgeError, match=r"^--seed an int of 1,329 bits: must be a whole number from 0 to"):
        integer("--seed", HUGE, 0, 2**32)
    with pytest.raises(MnistEdgeError, match=r"^--lr an int of 1,329 bits: must be a finite number"):
        number("--lr", HUGE, 0, math.inf)  # math.isfinite would raise OverflowError, float() too
    with pytest.raises(MnistEdgeError, match=r"^--lr True: must be a finite number"):
        number("--lr", True, 0, 1)
    assert number("--lr", 1, 0, 1) == 1.0 and type(number("--lr", 1, 0, 1)) is float
    assert shown(2**64) == repr(2**64) and shown([1]) == "list" and shown("a\nb") == "'a\\nb'"


CHECKS = {"epochs": int_in(1, 100), "lr": number_in(0, 10, low_open=True), "name": text(), "note": optional(text(8))}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1], "x.pt: its meta is a list, not a mapping"),
        (7, "x.pt: its meta is an int, not a mapping"),
        (
            {"epochs": 1, "lr": 0.1, "name": "a", "hook": 1},
            r"x.pt: its meta does not fit this mnist-edge \(unknown keys \['hook'\]\)",
        ),
        ({"lr": 0.1}, r"x.pt: its meta does not fit this mnist-edge \(missing \['epochs', 'name'\]\)"),
        ({5: 1, "epochs": 1, "name": "a"}, r"unknown keys \['5'\]"),
        (
            {"epochs": True, "name": "a"},
            r"x.pt: its meta has a bad 'epochs' \(True\): must be a whole number from 1 to 100",
        ),
        ({"epochs": 1.0, "name": "a"}, r"has a bad 'epochs' \(1.0\)"),
        ({"epochs": HUGE, "name": "a"}, r"has a bad 'epochs' \(an int of 1,329 bits\)"),
        ({"epochs": 1, "lr": float("nan"), "name": "a"}, r"has a bad 'lr' \(nan\): must be a finite number above 0"),
        ({"epochs": 1, "lr": float("inf"), "name": "a"}, r"has a bad 'lr' \(inf\)"),
        ({"epochs": 1, "name": ["a"]}, r"has a bad 'name' \(list\): must be a string"),
        (
            {"epochs": 1, "name": "a", "note": "x" * 9},
            r"has a bad 'note' \('xxxxxxxxx'\): must be a string of at most 8",
        ),
    ],
)
def test_check_fields_refuses_in_one_line(value, message):
    with pytest.raises(MnistEdgeError, match=message) as raised:
        check_fields("x.pt", "its meta", value, CHECKS, ("epochs", "name"))
    assert "\n" not in str(raised.value)


def test_extra_keys_are_checked_by_extra_when_it_is_given():
    extra = number_in()
    assert check_fields("m", "entry", {"epochs": 1, "name": "a", "new": 2.0}, CHECKS, extra=extra) == {
        "epochs": 1,
        "name": "a",
        "new": 2.0,
    }
    with pytest.raises(MnistEdgeError, match=r"^m: entry has a bad 'new' \(nan\)"):
        check_fields("m", "entry", {"new": float("nan")}, CHECKS, extra=extra)


ANY = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(2**60, 2**2000)
    | st.floats()
    | st.text(max_size=6)
    | st.lists(st.integers(), max_size=2)
)


@settings(max_examples=500, deadline=None)
@given(value=st.dictionaries(st.sampled_from([*CHECKS, "extra"]), ANY, max_size=5) | ANY)
def test_any_value_is_returned_unchanged_with_every_field_passing_or_one_error(value):
    try:
        checked = check_fields("x.pt", "its meta", value, CHECKS, ("epochs",))
    except MnistEdgeError as exc:
        assert str(exc).startswith("x.pt: its meta ") and "\n" not in str(exc) and len(str(exc)) < 300
        return
    assert checked is value and "epochs" in checked and set(checked) <= set(CHECKS)
    assert all(CHECKS[key](item) is None for key, item in checked.items())
    epochs = checked["epochs"]
    assert type(epochs) is int and 1 <= epochs <= 100  # bools, floats and huge ints are all refused
    assert "lr" not in checked or (math.isfinite(checked["lr"]) and 0 < checked["lr"] <= 10)
