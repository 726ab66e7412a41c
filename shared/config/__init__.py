"""sunbeam configuration: a TOML file of named contexts plus ``SUNBEAM_*`` overrides.

``load_config()`` finds the file, picks a context, applies the environment, fills in
defaults and returns a frozen :class:`Context`; any invalid input raises a one-line
:class:`ConfigError`. The file format is documented in ``load.py`` and
``listeners.py``; ``EXAMPLE_TOML`` is a complete example.
"""

from .errors import ConfigError, ConfigNotFound
from .example import EXAMPLE_TOML
from .load import ENV_VARS, default_config_path, load_config, read_config
from .model import Address, Config, Context, Listener, Secret

__all__ = [
    "ENV_VARS", "EXAMPLE_TOML", "Address", "Config", "ConfigError", "ConfigNotFound", "Context", "Listener",
    "Secret", "default_config_path", "load_config", "read_config",
]
