"""Content filters: the compiled matcher against a plain reference evaluator, validation
errors by path, and filters in the destination view (by version, counted by outcome)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from api.errors import RequestValidationError
from api.validation import create_destination, update_destination
from pipeline import filters
from pipeline.destinations import Route, Versions, fold
from pipeline.filters import MISSING, compiled, problems
from pipeline.metrics import FILTER_EVALUATIONS
from pipeline.settings import Settings
from pipeline.view import DestinationView
from tests.unit.test_view import apply, change, create

SETTINGS = Settings()

# -- the reference: the README's rules, read as literally as possible ------------------------


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "other"


def _equal(operand: Any, value: Any) -> bool:
    return _kind(operand) == _kind(value) != "other" and operand == value


def _before(value: Any, operand: Any) -> int | None:
    """-1, 0, 1 comparing value with operand; None across kinds (or not comparable)."""
    if _kind(value) != _kind(operand) or _kind(value) not in ("number", "string"):
        return None
    return (value > operand) - (value < operand)


def _some(test: Any, value: Any) -> bool:
    """An operator's test on a value, any element of an array."""
    items = value if isinstance(value, list) else [value]
    return any(test(item) for item in items)


ORDER = {"$gt": (1,), "$gte": (0, 1), "$lt": (-1,), "$lte": (-1, 0)}


def reference_operator(name: str, operand: Any, value: Any) -> bool:
    if name == "$exist":
        return (value is not MISSING) == operand
    if name == "$eq":
        return _some(lambda v: _equal(operand, v), value)
    if name == "$neq":
        return not reference_operator("$eq", operand, value)
    if name == "$in":
        return _some(lambda v: any(_equal(o, v) for o in operand), value)
    if name == "$nin":
        return not reference_operator("$in", operand, value)
    if name == "$startsWith":
        return _some(lambda v: isinstance(v, str) and v.startswith(operand), value)
    return _some(lambda v: _before(v, operand) in ORDER[name], value)


def _get(value: Any, name: str) -> Any:
    return value[name] if isinstance(value, dict) and name in value else MISSING


def reference_field(spec: Any, value: Any) -> bool:
    if isinstance(spec, dict):
        return reference_condition(spec, value, top=False)
    return reference_operator("$eq", spec, value)


def reference_condition(spec: dict[str, Any], value: Any, top: bool) -> bool:
    results = []
    for name, operand in spec.items():
        if name == "$and":
            results.append(all(reference_condition(s, value, top) for s in operand))
        elif name == "$or":
            results.append(any(reference_condition(s, value, top) for s in operand))
        elif name == "$not":
            results.append(not reference_condition(operand, value, top))
        elif name.startswith("$"):
            results.append(reference_operator(name, operand, value))
    fields = {k: v for k, v in spec.items() if not k.startswith("$")}
    if fields:
        candidates = value if isinstance(value, list) and not top else [value]
        results.append(
            any(all(reference_field(s, _get(c, k)) for k, s in fields.items()) for c in candidates)
        )
    return all(results)


def reference(document: dict[str, Any], event: dict[str, Any]) -> bool:
    envelope = {k: event[k] for k in ("type", "data", "metadata") if k in event}
    return reference_condition(document, envelope, top=True)


# -- generators ------------------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b"])
# Few values and few names, so that filters and events often meet (and differ by kind).
STRINGS = st.sampled_from(["", "a", "ab", "1"])
NUMBERS = st.one_of(st.integers(0, 2), st.sampled_from([1.0, 1.5]))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, STRINGS)
OPERATOR_ENTRIES = st.one_of(
    st.tuples(st.sampled_from(["$eq", "$neq"]), SCALARS),
    st.tuples(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), st.one_of(NUMBERS, STRINGS)),
    st.tuples(st.sampled_from(["$in", "$nin"]), st.lists(SCALARS, min_size=1, max_size=3)),
    st.tuples(st.just("$exist"), st.booleans()),
    st.tuples(st.just("$startsWith"), STRINGS),
)


def _objects(entries: st.SearchStrategy[tuple[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.lists(entries, min_size=1, max_size=2).map(dict)


EXAMPLES = _objects(st.tuples(NAMES, SCALARS))


def _nested(conditions: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    fields = st.tuples(NAMES, st.one_of(SCALARS, conditions))
    return _objects(
        st.one_of(
            fields,
            fields,  # twice as likely: examples reach into the event's structure
            OPERATOR_ENTRIES,
            st.tuples(
                st.sampled_from(["$and", "$or"]), st.lists(conditions, min_size=1, max_size=2)
            ),
            st.tuples(st.just("$not"), conditions),
        )
    )


CONDITIONS = st.recursive(st.one_of(EXAMPLES, _objects(OPERATOR_ENTRIES)), _nested, max_leaves=5)
TYPES = st.sampled_from(["order.updated", "order.created", "user.deleted"])
ENVELOPE_ENTRIES = st.one_of(
    st.tuples(st.just("type"), st.one_of(TYPES, _objects(OPERATOR_ENTRIES))),
    st.tuples(st.just("data"), CONDITIONS),
    st.tuples(st.just("metadata"), CONDITIONS),
)
FILTERS = st.recursive(
    _objects(ENVELOPE_ENTRIES),
    lambda inner: _objects(
        st.one_of(
            ENVELOPE_ENTRIES,
            st.tuples(st.sampled_from(["$and", "$or"]), st.lists(inner, min_size=1, max_size=2)),
            st.tuples(st.just("$not"), inner),
        )
    ),
    max_leaves=4,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(NAMES, inner, min_size=1, max_size=2)
    ),
    max_leaves=8,
)
EVENTS = st.fixed_dictionaries(
    {
        "id": st.just("evt_1"),
        "tenant": st.just("t"),
        "type": TYPES,
        "data": st.dictionaries(NAMES, VALUES, min_size=1, max_size=2),
    },
    optional={"metadata": st.dictionaries(NAMES, VALUES, max_size=2)},
)


def _twins(value: Any) -> list[Any]:
    """Values a matcher could confuse with `value`: other kinds of the same look, and
    neighbours."""
    if value is None:
        return [False, 0, ""]
    if isinstance(value, bool):
        return [int(value), float(value), str(value).lower()]
    if isinstance(value, int | float):
        return [float(value), int(value), str(value), value + 1, value - 0.5, value == 1]
    return [value + "x", value[:-1], *([int(value)] if value.isdigit() else [])]


def _near(value: Any) -> st.SearchStrategy[Any]:
    """The value itself, a twin, or an array holding one of them among others."""
    one = st.one_of(st.just(value), st.sampled_from(_twins(value)))
    return st.one_of(one, st.lists(st.one_of(one, SCALARS), min_size=1, max_size=3))


def _shaped_by(spec: Any) -> st.SearchStrategy[Any]:
    """Event values shaped by a filter condition: its fields present (or not), its
    operands and their twins, arrays of either: where a matcher can go wrong."""
    if not isinstance(spec, dict):
        return _near(spec)
    choices: list[st.SearchStrategy[Any]] = [VALUES]
    fields = {k: _shaped_by(v) for k, v in spec.items() if not k.startswith("$")}
    if fields:
        example = st.fixed_dictionaries(fields)
        partial = st.fixed_dictionaries({}, optional=fields)
        choices += [example, partial, st.lists(st.one_of(example, partial), min_size=1, max_size=3)]
    for name, operand in spec.items():
        if name in ("$and", "$or"):
            choices += [_shaped_by(item) for item in operand]
        elif name == "$not":
            choices.append(_shaped_by(operand))
        elif name in ("$in", "$nin"):
            choices += [_near(item) for item in operand]
        elif name.startswith("$"):
            choices.append(_near(operand))
    return st.one_of(choices)


def _envelope_parts(document: dict[str, Any], name: str) -> list[Any]:
    """Every condition a top-level filter puts on envelope field `name`."""
    found = [document[name]] if name in document else []
    for logical in ("$and", "$or"):
        for item in document.get(logical, ()):
            found += _envelope_parts(item, name)
    if "$not" in document:
        found += _envelope_parts(document["$not"], name)
    return found


@st.composite
def events_for(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    """An event whose type, data and metadata are drawn near what `document` asks."""
    event: dict[str, Any] = {"id": "evt_1", "tenant": "t"}
    for name, fallback in (("type", TYPES), ("data", VALUES), ("metadata", VALUES)):
        value = draw(st.one_of([fallback, *map(_shaped_by, _envelope_parts(document, name))]))
        if name == "data" and not isinstance(value, dict):
            value = {"a": value}
        if name != "metadata" or draw(st.booleans()):
            event[name] = value
    return event


# Anything a client might send: operator names, field names and every JSON kind, anywhere.
ANY_KEYS = st.sampled_from([*sorted(filters.OPERATORS), "$bogus", "type", "data", "a", "b"])
ANY_JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(ANY_KEYS, inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=500)
@given(FILTERS, st.data())
def test_the_compiled_matcher_agrees_with_the_reference(
    document: dict[str, Any], data: st.DataObject
) -> None:
    assume(not problems(document))  # deeper than MAX_DEPTH now and then
    event = data.draw(events_for(document))
    assert compiled(document).matches(event) == reference(document, event)


@settings(max_examples=500)
@given(ANY_JSON, st.data())
def test_any_document_is_refused_by_path_or_agrees_with_the_reference(
    document: Any, data: st.DataObject
) -> None:
    found = problems(document)
    event = data.draw(EVENTS if found else events_for(document))
    assert all(path == "filter" or path.startswith(("filter.", "filter[")) for path, _ in found)
    tally = filters.Tally()
    passed = tally.passes(compiled(document), event)  # never raises
    if found:
        assert (passed, tally.error) == (False, 1)
    else:
        assert passed == reference(document, event)


# -- the rules, by example -------------------------------------------------------------------

ORDER_EVENT = {
    "type": "order.updated",
    "tenant": "t",
    "data": {
        "status": "shipped",
        "total": 150,
        "tags": ["gift", "rush"],
        "items": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1}],
        "note": None,
    },
}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"data": {"status": "shipped", "total": {"$gte": 100}}}, True),
        ({"data": {"total": {"$gte": "100"}}}, False),  # no coercion
        ({"data": {"total": 150.0}}, True),
        ({"data": {"total": {"$gte": 150, "$lte": 150.0}}}, True),  # the bounds themselves
        ({"data": {"total": {"$gt": 150}}}, False),
        ({"data": {"total": {"$lt": 150}}}, False),
        ({"data": {"status": {"$gte": "shipped", "$lte": "shipped"}}}, True),
        ({"data": {"total": {"$neq": "150"}}}, True),
        ({"data": {"tags": "rush"}}, True),
        ({"data": {"tags": {"$nin": ["gift"]}}}, False),
        ({"data": {"items": {"sku": "A", "qty": 1}}}, False),  # one element, whole example
        ({"data": {"items": {"sku": "B", "qty": 1}}}, True),
        ({"data": {"note": None}}, True),
        ({"data": {"absent": None}}, False),
        ({"data": {"absent": {"$exist": False}, "note": {"$exist": True}}}, True),
        ({"data": {"status": {"$in": ["paid", "shipped"]}}}, True),
        ({"type": {"$startsWith": "order."}, "$not": {"data": {"status": "lost"}}}, True),
        ({"$or": [{"type": "user.deleted"}, {"data": {"total": {"$lt": 100}}}]}, False),
        ({"metadata": {"$exist": False}}, True),
        ({"data": {"status": {"$gt": "a", "$lt": "t"}}}, True),
        ({"data": {"note": {"$lt": 1}}}, False),  # null is not a number
    ],
)
def test_the_documented_rules(document: dict[str, Any], expected: bool) -> None:
    assert problems(document) == []
    assert compiled(document).matches(ORDER_EVENT) is expected


def test_equal_documents_share_one_compiled_filter() -> None:
    first = compiled({"data": {"a": 1, "b": 2}})
    assert compiled({"data": {"b": 2, "a": 1}}) is first
    assert compiled({"data": {"a": 1}}) != first


# -- validation at the API's edge -------------------------------------------------------------

GOOD = {"name": "hook", "webhook": {"url": "https://example.com/h"}, "events": ["a.b"]}


def errors_of(document: Any) -> dict[str, list[str]]:
    with pytest.raises(RequestValidationError) as caught:
        create_destination({**GOOD, "filter": document}, SETTINGS)
    return caught.value.errors


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({"data": {"total": {"$gte": [1]}}}, "filter.data.total.$gte"),
        ({"data": {"total": {"$gtee": 1}}}, "filter.data.total.$gtee"),
        ({"data": {"status": {"$exist": "yes"}}}, "filter.data.status.$exist"),
        ({"data": {"status": {"$in": []}}}, "filter.data.status.$in"),
        ({"data": {"status": {"$in": ["a", {"b": 1}]}}}, "filter.data.status.$in[1]"),
        ({"data": {"status": ["a", "b"]}}, "filter.data.status"),
        ({"data": {"status": {"$startsWith": 1}}}, "filter.data.status.$startsWith"),
        ({"$or": [{"data": {}}]}, "filter.$or[0].data"),
        ({"$and": {"data": {"a": 1}}}, "filter.$and"),
        ({"status": "shipped"}, "filter.status"),
        ({"$eq": "x"}, "filter.$eq"),
        ({}, "filter"),
        ("shipped", "filter"),
        (
            {"data": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}},
            "filter.data.a.b.c.d.e.f.g",
        ),
        ({"data": {f"k{n}": n for n in range(120)}}, "filter"),  # too many nodes
        ({"data": {"k": "x" * 5000}}, "filter"),  # too large
    ],
)
def test_a_bad_filter_is_refused_naming_the_path(document: Any, path: str) -> None:
    assert path in errors_of(document)


def test_patch_with_null_removes_the_filter_and_without_it_leaves_it() -> None:
    assert update_destination({"filter": None}, "webhook", SETTINGS) == {"filter": None}
    assert "filter" not in update_destination({"name": "x"}, "webhook", SETTINGS)
    document = {"data": {"status": "shipped"}}
    assert update_destination({"filter": document}, "webhook", SETTINGS) == {"filter": document}
    with pytest.raises(RequestValidationError) as caught:
        update_destination({"filter": {"data": {"x": {"$lt": None}}}}, "webhook", SETTINGS)
    assert list(caught.value.errors) == ["filter.data.x.$lt"]


# -- in the destination view ---------------------------------------------------------------------


def _count(outcome: str) -> float:
    return FILTER_EVALUATIONS.labels(outcome)._value.get()


def test_the_view_applies_the_filter_of_the_version_at_the_stamp_and_counts_outcomes() -> None:
    view = DestinationView("unused:9092")
    record = create("d1", events=("order.*",))
    apply(view, record, 10)
    shipped = {"data": {"status": "shipped"}}
    filtered = fold(record, change("update", 2, fields={"filter": shipped}))
    apply(view, filtered, 11)
    removed = fold(filtered, change("update", 3, fields={"filter": None}))
    apply(view, removed, 12)
    paid = {**ORDER_EVENT, "data": {"status": "paid"}}
    before = {outcome: _count(outcome) for outcome in filters.OUTCOMES}
    assert len(view.match("t", "order.updated", {0: 11}, paid)) == 1  # before the filter
    assert view.match("t", "order.updated", {0: 12}, paid) == []
    assert len(view.match("t", "order.updated", {0: 12}, ORDER_EVENT)) == 1
    assert len(view.match("t", "order.updated", {0: 13}, paid)) == 1  # removed again
    assert len(view.match("t", "order.updated", {0: 12})) == 1  # no event: no filtering
    assert {o: _count(o) - before[o] for o in filters.OUTCOMES} == {
        "matched": 1,
        "filtered_out": 1,
        "error": 0,
    }


def test_a_stored_filter_that_does_not_compile_matches_nothing_and_counts_an_error() -> None:
    view = DestinationView("unused:9092")
    record = create("d1", events=("order.*",))
    apply(view, fold(record, change("update", 2, fields={"filter": {"$bogus": 1}})), 10)
    before = _count("error")
    assert view.match("t", "order.updated", None, ORDER_EVENT) == []
    assert _count("error") == before + 1


def test_a_change_routing_does_not_read_keeps_the_filtered_entry() -> None:
    record = create("d1", events=("order.*",))
    filtered = fold(record, change("update", 2, fields={"filter": {"data": {"a": 1}}}))
    versions = Versions(0)
    versions.add(1, record, b"")
    versions.add(2, filtered, b"")
    versions.add(3, fold(filtered, change("update", 3, fields={"name": "x"})), b"")
    same = fold(filtered, change("update", 4, fields={"filter": {"data": {"a": 1}}}))
    versions.add(4, same, b"")
    assert [versions.as_of({0: o}) is not None for o in (1, 2, 5)] == [False, True, True]
    assert len(versions._history) == 4  # the create's entry and the filter's, no more
    assert isinstance(versions.routing, Route)
    assert versions.routing.filter is compiled({"data": {"a": 1}})
    assert versions.patterns() == {"order.*"}
