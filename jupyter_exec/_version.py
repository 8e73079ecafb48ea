"""The package version, in a leaf module so that nothing imports the package root for it."""

__all__ = ["__version__"]

__version__ = "0.4.0"
