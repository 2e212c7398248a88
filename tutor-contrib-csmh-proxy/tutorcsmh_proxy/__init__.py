"""Tutor plugin for csmh-proxy."""

__version__ = "0.1.0"
