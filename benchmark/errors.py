"""User-facing errors. The CLI turns any of them into one message and exit code 2."""


class BenchmarkError(Exception):
    """Base class of errors caused by the user's input rather than by a bug."""


class ConfigError(BenchmarkError):
    """The grid configuration is malformed or names something unknown."""


class DataError(BenchmarkError):
    """Data is missing, unreadable or not in a supported layout."""


class CacheError(BenchmarkError):
    """A cached artifact is corrupted or inconsistent with its metadata."""
