"""deepkin: combustion-chemistry surrogates and mechanism reduction (command-line entry point)."""

__all__ = ["__version__"]
__version__ = "0.1.0"
