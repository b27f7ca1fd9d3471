"""``eventflow`` itself: every subcommand's ``--help`` works, and a bare group prints its help."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from eventflow.cli import build_parser, main


def _command_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _command_paths(child, (*path, name))


def _groups(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield path
            for name, child in action.choices.items():
                yield from _groups(child, (*path, name))


@pytest.mark.parametrize("path", list(_command_paths(build_parser())), ids=" ".join)
def test_every_command_has_working_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*path, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {' '.join(('eventflow', *path))}")
    assert "``" not in out  # plain text, not reST markup


@pytest.mark.parametrize("path", list(_groups(build_parser())), ids=lambda p: " ".join(p) or "eventflow")
def test_a_group_without_a_command_prints_its_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(list(path)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: {' '.join(('eventflow', *path))}")
    assert "arguments are required" not in err


def test_the_overview_names_every_command_and_every_journeys_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name in commands.choices:
        assert f" {name} " in out
    (journeys,) = [a for a in commands.choices["journeys"]._actions if isinstance(a, argparse._SubParsersAction)]
    assert f"journey definitions and the catalog: {', '.join(journeys.choices)}" in out
