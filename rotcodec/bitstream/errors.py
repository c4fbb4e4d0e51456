"""Exceptions raised by the `.rcq` reader and writer."""

from __future__ import annotations


class BitstreamError(ValueError):
    """A malformed, truncated, corrupted or unsupported `.rcq` stream, or codes that cannot be written."""


class UnsupportedVersionError(BitstreamError):
    """The file was written by a newer format version than this reader understands."""
