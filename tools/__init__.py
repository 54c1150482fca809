"""Command-line entry points (thin: parse arguments, call the library). Each runs as ``python tools/<name>.py``
from a checkout or, once installed, as the ``resdet-<name>`` console script declared in pyproject.toml."""
