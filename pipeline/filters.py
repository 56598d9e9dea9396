"""Content filters: a destination's `filter`, checked once and compiled into closures.

A filter is a JSON object matched against the event envelope (`type`, `data`, `metadata`).
The API calls `problems` to validate one (every problem, by dotted path); the destination
view calls `compiled` when it reads a destination version that carries one, and the router
asks the compiled `Filter` about each event routed to that version (through `Tally`).

The language, exactly (README "Content filters" says the same for users):

- An object is a conjunction: every entry must hold. A key without `$` names a field of
  the value (at the top: `type`, `data` or `metadata`); its value is a condition on that
  field. A field absent, or looked up in something that is not an object, is *missing*.
- A scalar (string, number, boolean, null) in the place of a condition is `$eq` to it.
  An object there matches by example: the field's own fields must match, recursively.
- `$eq $neq $gt $gte $lt $lte $in $nin $startsWith` compare with no coercion: a string
  never equals a number, `1` equals `1.0`, `true` is not `1`; ordering compares two numbers
  or two strings (by code point), anything else across types is false. A missing field
  matches none of them, except `$neq` and `$nin`, which are the negations of `$eq` and
  `$in` (so a missing field, or `null`, is `$neq: 5`). `null` equals only a present null.
- `$exist: true|false`: the field is present (even as null) or missing.
- Arrays in the event: a comparison holds if the value is an array and any of its elements
  satisfies it (one level; `$neq`/`$nin` then mean no element does); an object example
  holds on an array if one element matches the whole example. Arrays are not allowed as
  examples in the filter (use `$in`).
- `$and: [..]`, `$or: [..]` (non-empty lists of conditions), `$not: {..}` apply to the
  value they sit on, at any level (at the top, to the envelope).

Bounds: at most MAX_DEPTH levels of nesting, MAX_NODES keys and values, MAX_BYTES encoded.
"""

from __future__ import annotations

import logging
import operator
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from pipeline.metrics import FILTER_EVALUATIONS

log = logging.getLogger(__name__)

MAX_DEPTH = 8
MAX_NODES = 100
MAX_BYTES = 4096
ENVELOPE_FIELDS = frozenset({"type", "data", "metadata"})
LOGICAL = frozenset({"$and", "$or", "$not"})
OPERATORS = (
    LOGICAL
    | {"$eq", "$neq", "$gt", "$gte", "$lt", "$lte"}
    | {"$in", "$nin", "$exist", "$startsWith"}
)
OUTCOMES = ("matched", "filtered_out", "error")

Test = Callable[[Any], bool]


class _Missing:
    """The value of a field that is not there (distinct from a present null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
_NUMBER = (int, float)


def _field(value: Any, name: str) -> Any:
    return value.get(name, MISSING) if type(value) is dict else MISSING


def _any_element(test: Test) -> Test:
    """`test`, holding on an array when it holds on one of its elements."""

    def check(value: Any) -> bool:
        if type(value) is list:
            return any(test(item) for item in value)
        return test(value)

    return check


def _negated(test: Test) -> Test:
    return lambda value: not test(value)


def _equal_to(operand: Any) -> Test:
    """Equality without coercion (a boolean is not a number, a string not a number)."""
    if operand is None or type(operand) is bool:
        return lambda value: value is operand
    if type(operand) is str:
        return lambda value: type(value) is str and value == operand
    return lambda value: type(value) in _NUMBER and value == operand


def _one_of(operands: Iterable[Any]) -> Test:
    """`$in`: equal to one of the operands; one set per kind, so `true` never finds 1."""
    by_kind: dict[type, set[Any]] = {}
    for operand in operands:
        kind = float if type(operand) is int else type(operand)
        by_kind.setdefault(kind, set()).add(operand)
    strings = by_kind.get(str, set())
    numbers = by_kind.get(float, set())
    flags = by_kind.get(bool, set())
    null = type(None) in by_kind

    def check(value: Any) -> bool:
        kind = type(value)
        if kind is str:
            return value in strings
        if kind is int or kind is float:
            return value in numbers
        if kind is bool:
            return value in flags
        return value is None and null

    return check


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}


def _ordered(name: str, operand: Any) -> Test:
    """Ordering within one kind: two numbers, or two strings by code point."""
    kinds = (str,) if type(operand) is str else _NUMBER
    compare = _COMPARISONS[name]
    return lambda value: type(value) in kinds and compare(value, operand)


def _all(tests: list[Test]) -> Test:
    if len(tests) == 1:
        return tests[0]
    return lambda value: all(test(value) for test in tests)


def _never(value: Any) -> bool:
    return False


def _is_scalar(value: Any) -> bool:
    return value is None or type(value) in (str, int, float, bool)


class _Compiler:
    """One pass over a filter document: the problems found, by path, and the closures."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []
        self.nodes = 0

    def problem(self, path: str, message: str) -> Test:
        self.problems.append((path, message))
        return _never

    def condition(self, spec: Any, path: str, depth: int, top: bool) -> Test:
        """An object of entries, all of which must hold on the value it is applied to."""
        self.nodes += 1
        if depth > MAX_DEPTH:
            return self.problem(path, f"is nested too deeply (at most {MAX_DEPTH} levels).")
        if type(spec) is not dict:
            return self.problem(path, "must be an object.")
        if not spec:
            return self.problem(path, "must not be empty (it would match every event).")
        on_value: list[Test] = []
        on_fields: list[Test] = []
        for name, operand in spec.items():
            where = f"{path}.{name}"
            if name in LOGICAL:
                on_value.append(self.logical(name, operand, where, depth, top))
            elif top and name not in ENVELOPE_FIELDS:
                on_value.append(
                    self.problem(where, "must be type, data, metadata, $and, $or or $not.")
                )
            elif name.startswith("$"):
                on_value.append(self.comparison(name, operand, where))
            else:
                on_fields.append(self.field(name, operand, where, depth))
        if on_fields and not top:
            # An example object on an array: one element must match all of its fields.
            on_value.append(_any_element(_all(on_fields)))
        else:
            on_value += on_fields
        return _all(on_value)

    def field(self, name: str, operand: Any, path: str, depth: int) -> Test:
        self.nodes += 1
        if type(operand) is dict:
            test = self.condition(operand, path, depth + 1, top=False)
        elif type(operand) is list:
            test = self.problem(path, "must not be an array: use $in to match one of several.")
        elif _is_scalar(operand):
            test = _any_element(_equal_to(operand))
        else:
            test = self.problem(path, "must be a string, number, boolean, null or object.")
        return lambda value: test(_field(value, name))

    def logical(self, name: str, operand: Any, path: str, depth: int, top: bool) -> Test:
        if name == "$not":
            return _negated(self.condition(operand, path, depth + 1, top))
        if type(operand) is not list or not operand:
            return self.problem(path, "must be a non-empty array of objects.")
        tests = [
            self.condition(item, f"{path}[{i}]", depth + 2, top) for i, item in enumerate(operand)
        ]
        if name == "$and":
            return _all(tests)
        return lambda value: any(test(value) for test in tests)

    def comparison(self, name: str, operand: Any, path: str) -> Test:
        self.nodes += 1
        if name not in OPERATORS:
            return self.problem(path, f"is not an operator: use one of {', '.join(_NAMES)}.")
        if name == "$exist":
            if type(operand) is not bool:
                return self.problem(path, "must be true or false.")
            return lambda value: (value is not MISSING) is operand
        if name in ("$eq", "$neq"):
            if not _is_scalar(operand):
                return self.problem(path, "must be a string, number, boolean or null.")
            test = _any_element(_equal_to(operand))
            return test if name == "$eq" else _negated(test)
        if name in ("$in", "$nin"):
            return self.membership(name, operand, path)
        if name == "$startsWith":
            if type(operand) is not str:
                return self.problem(path, "must be a string.")
            return _any_element(lambda value: type(value) is str and value.startswith(operand))
        if type(operand) not in (str, int, float):  # $gt $gte $lt $lte
            return self.problem(path, "must be a number or a string.")
        return _any_element(_ordered(name, operand))

    def membership(self, name: str, operand: Any, path: str) -> Test:
        if type(operand) is not list or not operand:
            return self.problem(path, "must be a non-empty array of scalars.")
        self.nodes += len(operand)
        for i, item in enumerate(operand):
            if not _is_scalar(item):
                return self.problem(f"{path}[{i}]", "must be a string, number, boolean or null.")
        test = _any_element(_one_of(operand))
        return test if name == "$in" else _negated(test)


_NAMES = sorted(OPERATORS)


def _compile(document: Any, root: str) -> tuple[Test, list[tuple[str, str]]]:
    compiler = _Compiler()
    try:
        size = len(orjson.dumps(document))
    except (TypeError, orjson.JSONEncodeError):
        compiler.problem(root, "must be a JSON object.")
        return _never, compiler.problems
    if size > MAX_BYTES:
        compiler.problem(root, f"must be at most {MAX_BYTES} bytes as JSON.")
        return _never, compiler.problems
    test = compiler.condition(document, root, 1, top=True)
    if compiler.nodes > MAX_NODES:
        compiler.problem(root, f"must have at most {MAX_NODES} keys and values.")
    return test, compiler.problems


def problems(document: Any, root: str = "filter") -> list[tuple[str, str]]:
    """(dotted path, message) of everything wrong with a filter document; [] if usable.

    The API calls this on create and PATCH; paths start at `root` (`filter.data.total.$gte`).
    """
    return _compile(document, root)[1]


class Unusable(Exception):
    """A stored filter that does not compile (written past the API's validation)."""


class Filter:
    """A compiled filter. Equal documents compile to equal filters (compared by `source`,
    the canonical JSON), and `compiled` hands out one object for them while it is in use."""

    __slots__ = ("__weakref__", "_test", "source")

    def __init__(self, source: bytes, test: Test | None) -> None:
        self.source = source
        self._test = test

    def matches(self, event: dict[str, Any]) -> bool:
        """Whether the event record (the router's parsed event: `type`, `data`, …) passes;
        raises Unusable if the filter does not compile."""
        if self._test is None:
            raise Unusable("the stored filter does not compile")
        return self._test(event)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Filter) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)


_COMPILED: weakref.WeakValueDictionary[bytes, Filter] = weakref.WeakValueDictionary()


def compiled(document: Any) -> Filter:
    """The compiled filter of a stored document; never raises (a document that does not
    compile gives a Filter that raises Unusable, which the router counts as an error)."""
    try:
        source = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return Filter(b"", None)
    found = _COMPILED.get(source)
    if found is None:
        test, errors = _compile(document, "filter")
        if errors:
            log.warning("a stored content filter does not compile, it matches no event: %s", errors)
        found = _COMPILED[source] = Filter(source, None if errors else test)
    return found


class Tally:
    """Filter outcomes of one event's routing, added to the metric once (the router asks
    about every filtered destination of an event; one counter update per event is cheaper
    than one per destination)."""

    __slots__ = ("error", "filtered_out", "matched")

    def __init__(self) -> None:
        self.matched = self.filtered_out = self.error = 0

    def passes(self, check: Filter, event: dict[str, Any]) -> bool:
        """Whether `event` passes `check`; one that cannot be evaluated does not."""
        try:
            passed = check.matches(event)
        except Exception:  # a hostile filter or event must never stall routing
            self.error += 1
            return False
        if passed:
            self.matched += 1
        else:
            self.filtered_out += 1
        return passed

    def flush(self) -> None:
        """Add the counts to herald_filter_evaluations_total."""
        for outcome, count in zip(
            OUTCOMES, (self.matched, self.filtered_out, self.error), strict=True
        ):
            if count:
                FILTER_EVALUATIONS.labels(outcome).inc(count)
