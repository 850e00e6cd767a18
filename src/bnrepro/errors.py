"""The one exception type users see: its message is a paragraph naming the bad value and the fix."""


class BnreproError(RuntimeError):
    """A problem with the user's input, data or environment, explained in its message."""


class ConfigError(BnreproError):
    """A configuration value is invalid for this run."""


class ResumeError(BnreproError):
    """A run cannot be resumed as asked; the run directory is left exactly as it was."""
