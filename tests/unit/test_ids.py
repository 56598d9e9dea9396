"""Ids (pipeline/ids.py) against the `ulid` package they replace on the hot path: the same
text for the same bytes, the same timestamps read back, the same ids refused, so derived ids
(delivery ids receivers deduplicate on) stay what they were before."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ulid import ULID

from pipeline import ids

ULID_TEXT = st.text(alphabet=ids.CROCKFORD + ids.CROCKFORD.lower(), min_size=26, max_size=26)


@given(st.binary(min_size=16, max_size=16))
def test_ulid_text_is_the_packages(value: bytes) -> None:
    assert ids.ulid_text(value) == str(ULID.from_bytes(value))


def _package_timestamp(text: str) -> bytes | None:
    try:
        return ULID.from_str(text).bytes[:6]
    except ValueError:
        return None


def _timestamp(text: str) -> bytes | None:
    try:
        return ids.ulid_timestamp(text)
    except ValueError:
        return None


@given(ULID_TEXT | st.text(max_size=30) | st.text(alphabet="0123456789ABCDILOUZ", max_size=27))
def test_timestamps_are_read_and_refused_like_the_package(text: str) -> None:
    assert _timestamp(text) == _package_timestamp(text)


@given(st.text(max_size=40), st.text(max_size=10), st.text(max_size=10))
def test_a_derived_id_is_what_the_package_made(parent: str, tenant: str, destination: str) -> None:
    digest = hashlib.sha256("\x1f".join((parent, tenant, destination)).encode()).digest()
    try:
        timestamp = ULID.from_str(parent.split("_", 1)[-1]).bytes[:6]
    except ValueError:
        timestamp = digest[10:16]
    expected = f"evdl_{ULID.from_bytes(timestamp + digest[:10])}"
    assert ids.derived_id(ids.DELIVERY, parent, tenant, destination) == expected


def test_a_derived_id_keeps_a_ulid_parents_time() -> None:
    parent = ids.new_id(ids.EVENT)
    child = ids.derived_id(ids.DELIVERY, parent, "t", "evtd_1")
    assert (
        ULID.from_str(child.removeprefix("evdl_")).milliseconds
        == ULID.from_str(parent.removeprefix("evt_")).milliseconds
    )


def test_new_ids_are_ulids_that_rise_strictly() -> None:
    made = [ids.new_id(ids.ATTEMPT) for _ in range(2000)]
    assert all(m.startswith("evat_") for m in made)
    parsed = [ULID.from_str(m.removeprefix("evat_")) for m in made]
    assert all(a < b for a, b in itertools.pairwise(parsed))
    assert made == sorted(made)


@pytest.mark.parametrize("text", ["", "7ZZZZZZZZZZZZZZZZZZZZZZZZZ", "01ARZ3NDEKTSV4RRFFQ69G5FAV"])
def test_known_texts(text: str) -> None:
    assert _timestamp(text) == _package_timestamp(text)
