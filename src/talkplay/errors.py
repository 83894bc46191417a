"""Errors a user can act on: each names what was wrong and where."""

from __future__ import annotations


class TalkPlayError(Exception):
    """Base class for errors shown to the user without a traceback."""


class InputError(TalkPlayError):
    """Bad input data, located by file, line or row, track and field.

    Call as ``InputError("title is empty", file="a.jsonl", line=3, track="t7", field="title")``.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        row: int | None = None,
        field: str | None = None,
        track: str | None = None,
    ) -> None:
        self.reason = message
        self.file = file
        self.line = line
        self.row = row
        self.field = field
        self.track = track
        super().__init__(self.format())

    def format(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.track is not None:
            where.append(f"track {self.track!r}")
        if self.field:
            where.append(f"field '{self.field}'")
        prefix = ", ".join(where)
        return f"{prefix}: {self.reason}" if prefix else self.reason


class StaleArtifactError(TalkPlayError):
    """An artifact was built from inputs that changed since (or a stage would change them
    under one built on them); the message names what changed and the command to re-run.

    ``artifact`` is the path of the artifact that no longer fits (e.g. ``run/model``).
    """

    def __init__(self, message: str, *, artifact: str | None = None) -> None:
        self.artifact = artifact
        super().__init__(message)
