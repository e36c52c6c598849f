"""Helpers for the framer tests: hypothesis settings and cutting a stream into chunks."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise

from hypothesis import settings
from hypothesis import strategies as st

#: Modest example counts keep the suite fast; no deadline, since a shared machine makes
#: timings flaky and the properties are about correctness, not speed.
PROPERTY = settings(max_examples=200, deadline=None)


def cut(stream: bytes, cuts: Iterable[int]) -> list[bytes]:
    """*stream* cut at the offsets *cuts* (in any order, repeats give empty chunks)."""
    points = [0, *sorted(cuts), len(stream)]
    return [stream[a:b] for a, b in pairwise(points)]


def cuts_for(stream: bytes) -> st.SearchStrategy[list[int]]:
    """Arbitrary cut points inside *stream*."""
    return st.lists(st.integers(0, len(stream)), max_size=20)
