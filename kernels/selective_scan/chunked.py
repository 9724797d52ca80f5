"""Chunked PyTorch selective scan (placeholder: delegates to the reference until the fast path lands)."""

from .reference import selective_scan_ref as selective_scan_chunked  # noqa: F401
