"""``ConfigError``: a bad setting, reported as one line naming the key and the valid values."""


class ConfigError(ValueError):
    """Raised before any compute; the CLI prints ``config error: <message>`` and exits 2."""
