"""CdcFunction's exception base."""

from __future__ import annotations


class CdcError(Exception):
    """Base of every error CdcFunction raises on purpose."""
