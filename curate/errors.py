"""One exception tree for everything a user can get wrong or run into.

The CLI maps ``exit_code`` to the process exit status: 2 for a bad recipe or bad
arguments (the user must change something before running again), 1 for a failure
while running. Messages are written for users: what was wrong, where (file, line,
YAML field) and what to do.
"""

from __future__ import annotations

import warnings


class CurateError(Exception):
    """Base of every error curate raises on purpose."""

    exit_code = 1


class RecipeError(CurateError):
    """A recipe (or an equivalent Python config) is invalid. Lists every problem found."""

    exit_code = 2

    def __init__(self, problems: list[str] | str, path: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.path = path
        where = f"{path}: " if path else ""
        if len(self.problems) == 1:
            msg = f"{where}{self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            msg = f"{where}{len(self.problems)} problems:\n{lines}"
        super().__init__(msg)


class UsageError(CurateError):
    """Bad command-line arguments or API arguments (a reference that does not exist...)."""

    exit_code = 2


class SourceError(CurateError):
    """An input cannot be read at all (missing file, unreadable format)."""

    exit_code = 2


class StageError(CurateError):
    """A stage failed or broke the runner's invariants."""


class CurateWarning(UserWarning):
    """A likely mistake curate noticed and ran past: a field absent in every record, an OT
    solve that stopped before converging, a mix component short of its quota. Raised through
    Python's ``warnings`` so a notebook shows it and a test can assert it
    (``pytest.warns(CurateWarning)``); the CLI renders it. Routine progress is not a warning:
    it goes to ``Reporter.log`` (the ``curate`` logger at INFO by default)."""


def warn(message: str, stacklevel: int = 2) -> None:
    """``warnings.warn(message, CurateWarning)``, attributed to the caller's caller."""
    warnings.warn(message, CurateWarning, stacklevel=stacklevel + 1)


class StoreError(CurateError):
    """The versioned store is missing, corrupt or cannot be written."""
