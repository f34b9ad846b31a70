"""The package version, read by pyproject.toml (and so by setup.py) and by ``reinforced_data.__version__``."""

__version__ = "0.1.0"
