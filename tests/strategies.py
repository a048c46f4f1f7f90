"""Hypothesis strategies built from the codec's own schema: any valid value of any wire type."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from meshchat.protocol.codec import (
    BoolSpec,
    BytesSpec,
    Codec,
    FloatSpec,
    IntSpec,
    OptionalSpec,
    RecordSpec,
    Spec,
    StrSpec,
    TupleSpec,
)

CODEC = Codec()


def strategy(spec: Spec, pools: dict[str, list[Any]] | None = None,
             field: str = "") -> st.SearchStrategy[Any]:
    """Valid values for ``spec``, kept small so examples stay fast. ``pools`` maps a field
    name to values worth trying there (a real room id, a real peer id), drawn half the time;
    integers lean towards their bounds, where the bugs are."""
    if isinstance(spec, TupleSpec):  # the pool is for the items
        return st.lists(strategy(spec.item, pools, field), max_size=3).map(tuple)
    pool = (pools or {}).get(field)
    base = _base(spec, pools)
    if pool and not isinstance(spec, RecordSpec | OptionalSpec):
        return st.sampled_from(pool) | base
    return base


def _base(spec: Spec, pools: dict[str, list[Any]] | None) -> st.SearchStrategy[Any]:
    match spec:
        case BytesSpec(lo, hi):
            return st.binary(min_size=lo, max_size=min(hi, max(lo, 40)))
        case StrSpec(n):
            return st.text(max_size=min(n, 20)) | st.just("é" * n)
        case IntSpec(lo, hi):
            edges = [v for v in (lo, lo + 1, hi - 1, hi, 2**31, 2**32, 2**63) if lo <= v <= hi]
            return st.sampled_from(edges) | st.integers(lo, hi)
        case FloatSpec():
            return st.sampled_from([0.0, -1e300, 1e300, 2.0**63]) | st.floats(
                allow_nan=False, allow_infinity=False)
        case BoolSpec():
            return st.booleans()
        case OptionalSpec(inner):
            return st.none() | _base(inner, pools)
        case TupleSpec(item, _):
            return st.lists(_base(item, pools), max_size=3).map(tuple)
        case RecordSpec(cls, fields):
            return st.builds(cls, *[strategy(f.spec, pools, f.name) for f in fields])
    raise AssertionError(f"no strategy for {spec!r}")


def of(cls: type, pools: dict[str, list[Any]] | None = None) -> st.SearchStrategy[Any]:
    """Any valid instance of a message or record class."""
    return strategy(CODEC.schema(cls), pools)
