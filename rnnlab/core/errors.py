"""The errors a user can act on: the command prints their message as one `error:` line and exits 2."""


class UserError(RuntimeError):
    """A failure a user can act on; the message says what to do."""


class ConfigError(UserError, ValueError):
    """A params.yaml (or preset) problem."""


class DiskFullError(UserError):
    """An output could not be written for lack of space."""


class UnwritableError(UserError):
    """An output's folder refuses changes."""
