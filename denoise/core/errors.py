"""The one error the method raises for an option out of range, naming the option it is about."""

from __future__ import annotations


class OptionError(ValueError):
    """``option`` (a keyword argument or ``RunOptions``/``Recipe`` field name) is out of range: ``problem``
    says how, e.g. ``OptionError("ratio", "must be in (0, 1), got 1.5")``. A front end names the option
    as its users write it (the command line: ``--ratio must be in (0, 1), got 1.5``)."""

    def __init__(self, option: str, problem: str):
        super().__init__(f"{option} {problem}")
        self.option, self.problem = option, problem
