"""The one exception type for user mistakes: bad config, bad store, bad recording.

The CLI turns it into a single line on stderr and a non-zero exit code; anything else
is a bug and keeps its traceback.
"""


class SparsealignError(ValueError):
    """A problem with the user's input, phrased as `<path>: <what is wrong>; expected <what>`."""


def fail(path, problem: str, expected: str | None = None) -> SparsealignError:
    """Build the error for `path` (a file, store or config key) in the project's one format."""
    message = f"{path}: {problem}"
    if expected:
        message += f"; expected {expected}"
    return SparsealignError(message)
