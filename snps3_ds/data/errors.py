"""Errors of the data path, in one small module so decoders, readers and loaders share them without cycles."""

from __future__ import annotations


class DecodeError(RuntimeError):
    """A sample whose media or metadata cannot be used; the loader skips it and counts `reason`.

    `reason` is a short stable word (e.g. `undecodable`, `missing_json`) used as the counter key in logs,
    in `VideoTextBatch.skipped` and in shards.json failure lists.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class DataQualityError(RuntimeError):
    """The share of skipped samples passed `data.max_skip_rate`: the data, not the model, needs fixing."""


class RemoteReadError(OSError):
    """A shard URL that failed every try (refused, timed out, dropped, 5xx); the sample is counted as `remote`."""
