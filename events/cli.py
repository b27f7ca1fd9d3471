"""``eventflow`` subcommands of the events package."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds this package's subcommands to the ``eventflow`` parser."""
