"""Optional engines and adapters live in extras; a missing one is a one-line error."""

from __future__ import annotations

from harness.core.errors import ConfigError

# top-level module -> the extra that installs it
EXTRAS = {"falconpy": "crowdstrike", "requests": "crowdstrike", "pyspark": "spark",
          "pandas": "spark"}


def missing_extra(exc: ModuleNotFoundError, what: str) -> ConfigError:
    """``what`` needs a module that is not installed: say which extra brings it."""
    module = (exc.name or "").partition(".")[0]
    extra = EXTRAS.get(module)
    if extra is None:
        return ConfigError(f"{what} needs the Python module {module!r}, which is not installed: "
                           f"reinstall shadowtest (pip install --force-reinstall shadowtest)")
    return ConfigError(f"{what} needs {module!r}: pip install 'shadowtest[{extra}]'")
