"""The errors zoned reports to a user: each carries one clear line."""


# What the CLI exits with for any error of zoned's own (bad input, a failed set-up), as
# podman does: 125, apart from the container's own exit code and 126/127 for a command the
# container cannot execute.
ERROR_EXIT = 125


class ZonedError(Exception):
    """A failure the user caused or can fix; the CLI prints `zoned: <message>` and exits 125."""

    exit_code = ERROR_EXIT


class NotFound(ZonedError):
    """A container (or image) that does not exist."""


class InvalidState(ZonedError):
    """An operation the runtime-spec lifecycle forbids in the container's current state."""


class ExecError(ZonedError):
    """The container's command cannot be executed: 127 if it is missing, 126 if it is not
    executable (the shell's and docker's codes; podman matches runc's wording)."""

    def __init__(self, message: str, exit_code: int = 126):
        super().__init__(message)
        self.exit_code = exit_code


class ConfigError(ZonedError):
    """A malformed flag, spec or zone file."""
