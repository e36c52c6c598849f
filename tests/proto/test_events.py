"""The framers' vocabulary: the sentinels and the ProtocolError subclasses."""

from __future__ import annotations

import pickle

import pytest

import netserve.proto
from netserve import NetserveError, ProtocolError
from netserve.proto import (
    EOF,
    NEED_DATA,
    BadFrameError,
    FrameTooLargeError,
    IncompleteFrameError,
    Sentinel,
)


def test_sentinels_are_distinct_singletons_named_plainly() -> None:
    assert NEED_DATA is Sentinel.NEED_DATA
    assert EOF is Sentinel.EOF
    assert set(Sentinel) == {NEED_DATA, EOF}
    assert repr(NEED_DATA) == str(NEED_DATA) == "NEED_DATA"
    assert repr(EOF) == "EOF"
    assert pickle.loads(pickle.dumps(NEED_DATA)) is NEED_DATA


@pytest.mark.parametrize("cls", [FrameTooLargeError, IncompleteFrameError, BadFrameError])
def test_errors_join_the_one_exception_tree(cls: type[Exception]) -> None:
    assert issubclass(cls, ProtocolError)
    assert issubclass(cls, NetserveError)


def test_frame_too_large_error_carries_size_and_limit_and_pickles() -> None:
    error = FrameTooLargeError("frame of 9 bytes is too long", 9, 4)
    assert str(error) == "frame of 9 bytes is too long"
    assert (error.size, error.limit) == (9, 4)
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.size, copy.limit) == (str(error), 9, 4)


def test_incomplete_frame_error_carries_the_partial_frame_and_pickles() -> None:
    error = IncompleteFrameError("closed mid-line", b"par")
    assert str(error) == "closed mid-line"
    assert error.data == b"par"
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.data) == (str(error), b"par")


def test_every_exported_name_exists() -> None:
    for name in netserve.proto.__all__:
        assert hasattr(netserve.proto, name), name
