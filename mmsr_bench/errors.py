"""Exceptions that the CLI turns into one clear error line and a non-zero exit."""


class BenchError(Exception):
    """A user-facing error: bad input, missing data or weights, a hash mismatch. The message says what to do."""


class DataError(BenchError):
    """Malformed or missing data; the message names the file and line or field."""


class HashMismatch(BenchError):
    """A materialized artifact does not match the hash frozen in its suite spec."""


class UnknownName(BenchError):
    """An unknown suite, model, dataset or metric; the message lists the closest names."""


class MissingModality(BenchError):
    """An adapter needs item text or images that the dataset does not have."""
