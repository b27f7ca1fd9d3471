"""The preference center's HTML: server-rendered, no JavaScript, accessible.

Every control has a visible ``<label>``; groups are ``<fieldset>`` with a ``<legend>``; the page
declares its language; focus is always visible; text and controls keep a contrast of at least
4.5:1 (WCAG 2.1 AA: #1f1f1f on white, white on #0b57d0); the form is plain HTML, so keyboard and
screen readers work as they do everywhere. Nothing is loaded from elsewhere (a strict CSP).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from jinja2 import Environment, StrictUndefined

from eventflow.preferences.texts import TEXTS, Language

_ENV = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)

_LAYOUT = """<!doctype html>
<html lang="{{ lang }}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{ title }}</title>
<style>
body { font: 1rem/1.5 system-ui, sans-serif; color: #1f1f1f; background: #ffffff; margin: 0; }
main { max-width: 40rem; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 1.5rem; }
fieldset { border: 1px solid #6b6b6b; border-radius: .5rem; margin: 0 0 1.25rem; padding: .75rem 1rem; }
legend { font-weight: 600; padding: 0 .25rem; }
.topic { margin: .5rem 0 1rem; }
.topic p, .help { margin: .25rem 0; color: #3c3c3c; }
label { display: inline-flex; align-items: center; gap: .5rem; margin: .25rem 1.25rem .25rem 0; min-height: 2rem; }
input[type=checkbox] { width: 1.25rem; height: 1.25rem; }
button { font: inherit; color: #ffffff; background: #0b57d0; border: 0; border-radius: .375rem; padding: .625rem 1.25rem;
         cursor: pointer; }
a { color: #0b57d0; }
:focus-visible { outline: 3px solid #1f1f1f; outline-offset: 2px; }
.skip { position: absolute; left: -100vw; }
.skip:focus { left: 1rem; top: 1rem; background: #ffffff; }
[role=status], [role=alert] { border-left: 4px solid #0b57d0; padding: .5rem 1rem; background: #f1f5fe; }
[role=alert] { border-color: #b3261e; background: #fdf1f0; }
</style>
</head>
<body>
{% block body %}{% endblock %}
</body>
</html>
"""

_PAGE = _ENV.from_string(_LAYOUT.replace("{% block body %}{% endblock %}", """
<a class="skip" href="#preferences">{{ t.skip }}</a>
<main>
<h1>{{ t.title }}</h1>
<p>{{ t.intro }}</p>
<form id="preferences" method="post" action="{{ action }}">
<input type="hidden" name="form" value="{{ form_token }}">
<fieldset>
<legend>{{ t.channels_legend }}</legend>
<p class="help" id="channels-help">{{ t.channels_help }}</p>
{% for channel in channels %}
<label for="channel-{{ channel.name }}"><input type="checkbox" id="channel-{{ channel.name }}"
 name="channel.{{ channel.name }}" aria-describedby="channels-help"{% if channel.on %} checked{% endif %}>
{{ channel.label }}</label>
{% endfor %}
</fieldset>
<fieldset>
<legend>{{ t.topics_legend }}</legend>
{% for topic in topics %}
<div class="topic" role="group" aria-labelledby="topic-{{ topic.name }}">
<p><strong id="topic-{{ topic.name }}">{{ topic.title }}</strong></p>
{% if topic.description %}<p id="topic-{{ topic.name }}-about">{{ topic.description }}</p>{% endif %}
{% if topic.transactional %}
<p>{{ t.always }}</p>
{% else %}
{% for choice in topic.choices %}
<label for="topic-{{ topic.name }}-{{ choice.name }}"><input type="checkbox" id="topic-{{ topic.name }}-{{ choice.name }}"
 name="topic.{{ topic.name }}.{{ choice.name }}"{% if choice.on %} checked{% endif %}>
{{ topic.title }}: {{ choice.label }}</label>
{% endfor %}
{% endif %}
</div>
{% endfor %}
</fieldset>
<button type="submit">{{ t.save }}</button>
</form>
</main>
"""))

_MESSAGE = _ENV.from_string(_LAYOUT.replace("{% block body %}{% endblock %}", """
<main>
<h1>{{ title }}</h1>
<p role="{{ role }}">{{ message }}</p>
{% if link %}<p><a href="{{ link }}">{{ t.back }}</a></p>{% endif %}
{% if form_action %}
<form method="post" action="{{ form_action }}">
<button type="submit">{{ button }}</button>
</form>
{% endif %}
</main>
"""))


@dataclass(frozen=True)
class Choice:
    """One checkbox: a channel (of a topic, or channel-wide), ticked or not."""

    name: str
    label: str
    on: bool


@dataclass(frozen=True)
class TopicView:
    name: str
    title: str
    description: str
    transactional: bool
    choices: Sequence[Choice]


def texts(language: Language) -> Mapping[str, str]:
    return TEXTS[language]


def preference_page(language: Language, *, action: str, form_token: str, channels: Sequence[Choice],
                    topics: Sequence[TopicView]) -> str:
    t = texts(language)
    return _PAGE.render(lang=language.value, title=t["title"], t=t, action=action, form_token=form_token,
                        channels=channels, topics=topics)


def message_page(language: Language, *, title: str, message: str, alert: bool = False, link: str = "",
                 form_action: str = "", button: str = "") -> str:
    """A page saying one thing: saved, unsubscribed, or why a link cannot be used (``alert``)."""
    return _MESSAGE.render(lang=language.value, title=title, message=message, role="alert" if alert else "status",
                           t=texts(language), link=link, form_action=form_action, button=button)
