"""The events Eventflow itself raises when a customer enters or leaves a segment.

A journey starts on entry with ``trigger: {event: SegmentEntered, filter: 'payload.segment == "x"'}``
and ``entry: {rule: once_per_key, key: payload.entry}`` (one instance per entry), and exits with
``exit: [{event: SegmentLeft, key: payload.entry}]``. These types are reserved: the consumer
dead-letters a record from Kafka that claims one, so no publisher can forge an entry.
"""

from __future__ import annotations

from typing import Any

from journeys.samples import sample_source_context

SEGMENT_ENTERED = "SegmentEntered"
SEGMENT_LEFT = "SegmentLeft"
#: Event types only Eventflow raises.
RESERVED_EVENT_TYPES = frozenset({SEGMENT_ENTERED, SEGMENT_LEFT})


def segment_payload(segment_id: str, version: int, entry_id: int) -> dict[str, Any]:
    """``entry``: the id of the entry (an exit carries the entry it ends), a text so it can key an instance."""
    return {"segment": segment_id, "version": version, "entry": str(entry_id)}


def segment_event_samples() -> dict[str, dict[str, Any]]:
    """Sample contexts the validator checks journeys on these events against."""
    return {event_type: sample_source_context(event_type, segment_payload("sample_segment", 1, 1))
            for event_type in sorted(RESERVED_EVENT_TYPES)}
