"""Launchers: XManager jobs per sweep point, and local multi-process runs."""
