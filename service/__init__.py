"""deepkin package."""
