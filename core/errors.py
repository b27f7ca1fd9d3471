"""The root of Eventflow's error hierarchy and the start-up configuration error."""

from __future__ import annotations


class EventflowError(Exception):
    """Root of every error Eventflow raises on purpose."""


class ConfigError(EventflowError):
    """A setting is missing or invalid; raised once at start-up, naming the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem
