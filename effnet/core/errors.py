"""The one exception type for bad user input. The CLI prints it as one line and exits 2."""


class ConfigError(ValueError):
    """A user-supplied value or name is invalid; the message says which and lists the valid ones."""


class DataError(ConfigError):
    """The data directory, split or files are missing or unusable; the message names which."""
