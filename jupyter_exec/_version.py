"""The package version, in a leaf module so that nothing imports the package root for it."""

__version__ = "0.3.0"
