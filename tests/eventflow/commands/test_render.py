"""``eventflow journeys render``: a send step's subject, text and HTML for an event, as the send activity renders them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eventflow.cli import main

REPO = Path(__file__).resolve().parents[3]
CART_EVENT: dict[str, Any] = json.loads((REPO / "journeys" / "examples" / "abandoned_cart.jsonl").read_text()
                                        .splitlines()[0])


def _event(tmp_path: Path, **customer: object) -> Path:
    event = {**CART_EVENT, "customer": {**CART_EVENT["customer"], **customer}}
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event, indent=2))  # one event, pretty-printed
    return path


def test_render_writes_subject_text_and_html_with_escaped_values_and_inlined_css(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    event = _event(tmp_path, first_name='<script>alert(1)</script>" onmouseover="x', locale="en")
    out = tmp_path / "out"

    assert main(["journeys", "render", "abandoned_cart", "cart_reminder", "--event", str(event),
                 "--out", str(out)]) == 0

    assert "abandoned_cart/cart_reminder: email cart_reminder/en" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["html.html", "subject.txt", "text.txt"]
    assert (out / "subject.txt").read_text() == "You left something in your cart\n"
    assert (out / "text.txt").read_text().startswith('Hi <script>alert(1)</script>" onmouseover="x,\n')
    html = (out / "html.html").read_text()
    # Text, not markup: a quote in a text node needs no escaping, and the inliner writes it plain.
    assert "<script" not in html and '>Hi &lt;script&gt;alert(1)&lt;/script&gt;" onmouseover="x,</p>' in html
    assert "<style" not in html and '<p style="line-height: 1.5;">' in html
    assert 'href="https://shop.example.com/cart?utm_source=email&amp;utm_campaign=cart_reminder"' in html


def test_render_prints_the_parts_in_the_customers_locale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["journeys", "render", "abandoned_cart", "cart_reminder", "--event", str(_event(tmp_path))]) == 0

    out = capsys.readouterr().out
    assert "--- subject\nSie haben etwas im Warenkorb vergessen\n--- text\nHallo Sam," in out
    assert "--- html\n<html>" in out and "Zum Warenkorb</a>" in out


def test_render_names_the_send_steps_when_the_step_is_not_one(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    event = str(_event(tmp_path))

    assert main(["journeys", "render", "abandoned_cart", "nope", "--event", event]) == 2
    assert "has no step 'nope' (send steps: cart_reminder, cart_follow_up)" in capsys.readouterr().err
    assert main(["journeys", "render", "abandoned_cart", "grace_period", "--event", event]) == 2
    assert "step 'grace_period' is a delay step and sends nothing" in capsys.readouterr().err
