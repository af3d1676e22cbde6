"""``decode.prefetched``: the scan's decode-ahead thread keeps order, passes errors on, stops cleanly."""

import threading

import pytest

from curation.decode import prefetched


def test_order_and_end():
    with prefetched(iter(range(100)), depth=3) as items:
        assert list(items) == list(range(100))


def test_error_reaches_the_consumer_after_the_good_items():
    def items():
        yield 1
        yield 2
        raise ValueError("broken packet")

    got = []
    with pytest.raises(ValueError, match="broken packet"):
        with prefetched(items(), depth=1) as frames:
            for item in frames:
                got.append(item)
    assert got == [1, 2]


def test_early_exit_stops_and_joins_the_thread():
    before = threading.active_count()
    with pytest.raises(RuntimeError):
        with prefetched(iter(range(10**9)), depth=2) as frames:
            for item in frames:
                if item == 5:
                    raise RuntimeError("consumer gave up")
    assert threading.active_count() == before
