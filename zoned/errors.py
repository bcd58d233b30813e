"""The errors zoned reports to a user: each carries one clear line."""


class ZonedError(Exception):
    """A failure the user caused or can fix; the CLI prints `zoned: <message>` and exits 1."""

    exit_code = 1


class NotFound(ZonedError):
    """A container (or image) that does not exist."""


class InvalidState(ZonedError):
    """An operation the runtime-spec lifecycle forbids in the container's current state."""


class ConfigError(ZonedError):
    """A malformed flag, spec or zone file."""
