"""The commit watermark only moves past an offset when it and every earlier one are done."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumer.watermark import PartitionWatermark


def test_out_of_order_completion_holds_the_watermark_at_the_first_unfinished_offset() -> None:
    watermark = PartitionWatermark()
    for offset in (10, 11, 12):
        watermark.add(offset)
    watermark.done(12)
    watermark.done(11)
    assert watermark.commit_position == 10
    watermark.done(10)
    assert watermark.commit_position == 13
    assert watermark.in_flight == 0


def test_skipped_offsets_move_the_watermark_only_when_nothing_earlier_is_pending() -> None:
    watermark = PartitionWatermark()
    watermark.skip(5)
    assert watermark.commit_position == 6
    watermark.add(6)
    watermark.skip(7)
    assert watermark.commit_position == 6
    watermark.done(6)
    assert watermark.commit_position == 8


@given(st.permutations(list(range(30))), st.sets(st.integers(0, 29)))
def test_commit_position_is_always_one_past_the_longest_done_prefix(order: list[int], skipped: set[int]) -> None:
    watermark = PartitionWatermark()
    for offset in range(30):
        if offset in skipped:
            watermark.skip(offset)
        else:
            watermark.add(offset)
    done = set(skipped)
    for offset in order:
        if offset in skipped:
            continue
        watermark.done(offset)
        done.add(offset)
        prefix = 0
        while prefix in done:
            prefix += 1
        assert watermark.commit_position == prefix
