"""The one error type of the storage package."""

from __future__ import annotations

__all__ = ["StorageError", "TrackingStoreError", "WorkdirError"]


class StorageError(Exception):
    """An artifact could not be written, read or validated.

    Every failure inside ``storage`` surfaces as this type; errors from pyarrow, faiss or the
    operating system are chained as ``__cause__``.

    Args:
        artifact: The artifact's name, or its path when no name is known.
        problem: What went wrong, in words.

    Attributes:
        artifact: The artifact's name or path.
        problem: What went wrong.
    """

    def __init__(self, artifact: str, problem: str) -> None:
        super().__init__(f"artifact {artifact!r}: {problem}")
        self.artifact = artifact
        self.problem = problem

    def __reduce__(self) -> tuple[type[StorageError], tuple[str, str]]:
        """Pickle with both constructor arguments (Prefect pickles task exceptions)."""
        return (type(self), (self.artifact, self.problem))


class WorkdirError(StorageError):
    """The work directory cannot be used (it cannot be created or written); one line naming it and why."""

    def __str__(self) -> str:
        return f"work directory {self.artifact}: {self.problem}"


class TrackingStoreError(StorageError):
    """The MLflow tracking store cannot be created, opened or written; one line naming the store and the cause.

    Args:
        artifact: The store (``.../mlflow.db``, or the tracking URI when it is not SQLite).
        problem: The cause.
    """

    def __str__(self) -> str:
        return f"MLflow store {self.artifact}: {self.problem}"
