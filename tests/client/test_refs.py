"""Ref parsing: mnist, mnist:3, mnist:latest, mnist@production."""

from __future__ import annotations

import pytest

from weightvault import InvalidRef, Ref, parse_ref


@pytest.mark.parametrize(
    ("text", "model", "ref"),
    [
        ("mnist", "mnist", "latest"),
        ("mnist:latest", "mnist", "latest"),
        ("mnist@latest", "mnist", "latest"),
        ("mnist:3", "mnist", "3"),
        ("mnist:007", "mnist", "7"),
        ("mnist@3", "mnist", "3"),
        ("mnist@production", "mnist", "production"),
        ("my-model.v2_x@prod-2", "my-model.v2_x", "prod-2"),
        ("  mnist:3 ", "mnist", "3"),
    ],
)
def test_parses_each_form(text: str, model: str, ref: str) -> None:
    assert parse_ref(text) == Ref(model, ref)


@pytest.mark.parametrize(
    ("ref", "text", "number", "path"),
    [
        (Ref("mnist"), "mnist:latest", None, "/v1/models/mnist/versions/latest"),
        (Ref("mnist", "3"), "mnist:3", 3, "/v1/models/mnist/versions/3"),
        (Ref("mnist", "production"), "mnist@production", None, "/v1/models/mnist/versions/production"),
    ],
)
def test_prints_back_and_names_its_path(ref: Ref, text: str, number: int | None, path: str) -> None:
    assert str(ref) == text
    assert parse_ref(str(ref)) == ref
    assert ref.number == number
    assert ref.path == path


@pytest.mark.parametrize(
    "text",
    [
        "",
        "MNIST",
        "mnist:",
        "mnist@",
        "mnist:0",
        "mnist:-1",
        "mnist:\uff13",  # a non-ASCII digit
        ":3",
        "@prod",
        "mnist@Prod",
        "mnist@prod@x",
        "mnist:3:4",
        "../etc:3",
        "mnist/../x",
        "a" * 129,
    ],
)
def test_refuses_what_cannot_name_a_version(text: str) -> None:
    with pytest.raises(InvalidRef):
        parse_ref(text)


def test_an_alias_after_a_colon_gets_a_hint_and_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="mnist@production"):
        parse_ref("mnist:production")
