"""Batching by length: sort items by token count so each padded batch wastes little compute."""

from __future__ import annotations


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Index batches of at most ``batch_size``, longest first (an out-of-memory shows on the first batch)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
