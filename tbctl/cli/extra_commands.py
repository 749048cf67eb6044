"""Everyday commands beyond the core lifecycle (logs, open, config)."""

from __future__ import annotations
