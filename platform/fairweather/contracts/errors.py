"""The base of every *expected* error: bad configs, unreadable inputs, broken tables.

Entry points print such an error as one line and exit non-zero (2; :class:`JobFailedError`: 1); anything else is a
bug and keeps its traceback.
"""


class FairweatherError(Exception):
    """An error caused by the user's input or environment, with a message that names the culprit."""


class JobFailedError(FairweatherError):
    """A job that started on valid input and failed (e.g. every trial of a sweep): exit code 1, not 2."""
