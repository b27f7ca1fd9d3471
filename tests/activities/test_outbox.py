"""The outbox dedupes like a provider: per send, and for a push send per device."""

from __future__ import annotations

from pathlib import Path

from activities.channels import OutgoingMessage
from activities.outbox import OutboxChannel, read_outbox
from activities.outcomes import SendStatus


def _message(device_id: str = "", key: str = "journey:j:c1/step") -> OutgoingMessage:
    return OutgoingMessage(idempotency_key=key, channel="webpush" if device_id else "email", to=f"to-{device_id}",
                           subject="Hi", body="Hello", template_id="t", locale="en", workflow_id="journey:j:c1",
                           device_id=device_id)


async def test_each_device_of_a_push_send_gets_one_line_and_a_repeat_none(tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    outbox = OutboxChannel(path)
    first = [await outbox.deliver(_message(device)) for device in ("d1", "d2")]
    assert [r.status for r in first] == [SendStatus.SENT, SendStatus.SENT]
    assert (await outbox.deliver(_message("d1"))).status is SendStatus.DUPLICATE
    # A restarted worker reads what was written before.
    reopened = OutboxChannel(path)
    assert (await reopened.deliver(_message("d2"))).status is SendStatus.DUPLICATE
    assert await reopened.reconcile(_message("d1"), 0.0) is not None
    assert await reopened.reconcile(_message("d3"), 0.0) is None
    assert (await reopened.deliver(_message())).status is SendStatus.SENT
    assert (await reopened.deliver(_message())).status is SendStatus.DUPLICATE
    assert [(m["device_id"], m["to"]) for m in read_outbox(path)] == [("d1", "to-d1"), ("d2", "to-d2"), ("", "to-")]
