"""The project's error types. Every refusal of bad input raises one of these."""


class PeelError(Exception):
    """Base class of every error peel raises on bad input or a bad artifact."""


class DataError(PeelError, ValueError):
    """An interactions file or array is malformed; the message names the file, line and value."""


class BudgetError(PeelError, ValueError):
    """A memory budget cannot be parsed or is below the minimum a model needs."""


class ConfigError(PeelError, ValueError):
    """A configuration value is unknown, of the wrong type or inconsistent with another."""


class BundleError(PeelError, ValueError):
    """A device bundle (or its index / users file) is missing, corrupt, truncated or of another version."""
