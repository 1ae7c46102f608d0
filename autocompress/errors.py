class ConfigError(ValueError):
    """Bad user input (YAML, flags, missing files): one message naming what is wrong."""
