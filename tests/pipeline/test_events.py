import dataclasses

import pytest

from pipeline import Data, MessageEnd, MessageStart, StreamEnd
from pipeline.errors import ConnectRefused, ConnectTimeout, UpstreamError


def test_events_are_frozen_and_slotted() -> None:
    for event, field in (
        (Data(b"x"), "data"),
        (MessageStart("head"), "head"),
        (MessageEnd(), "tail"),
        (StreamEnd(), "error"),
    ):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(event, field, 1)
        assert not hasattr(event, "__dict__")


def test_events_compare_by_value() -> None:
    assert Data(b"ab") == Data(b"ab") != Data(b"a")
    assert MessageStart({"k": 1}) == MessageStart({"k": 1})
    assert StreamEnd() == StreamEnd(None)
    assert len(Data(b"abc")) == 3


def test_stream_end_carries_a_typed_reason() -> None:
    end = StreamEnd(ConnectRefused("no answer", target="127.0.0.1:1"))
    assert isinstance(end.error, UpstreamError)
    assert end.error.status == 502
    assert end.error.target == "127.0.0.1:1"
    assert ConnectTimeout("slow").status == 504
