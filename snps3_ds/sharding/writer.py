"""Write WebDataset shards, their DALI indexes and a shards.json manifest (DESIGN §3.1).

A shard is `<prefix>-%06d.tar`; beside it sits `<prefix>-%06d.idx` (DALI's
`fn.readers.webdataset` needs it for random access) and, for the whole set,
`<prefix>.shards.json`. Every file is written under a temporary name and
renamed when complete, so a reader never sees a half-written shard under its
final name, and an interrupted build keeps everything it finished.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from webdataset import TarWriter
from wds2idx import IndexCreator

log = logging.getLogger(__name__)

# A fixed member mtime makes the tar bytes depend only on the samples, so a
# seeded build is byte-for-byte reproducible (2000-01-01, not 0: GNU tar warns
# about "implausibly old" stamps).
_TAR_MTIME = 946684800.0
_TAR_BLOCK = 512


def _tar_entry_bytes(size: int) -> int:
    """Bytes one member takes in a tar: a 512-byte header plus padded data."""
    return _TAR_BLOCK + -(-size // _TAR_BLOCK) * _TAR_BLOCK


def _index_keys(index: Path) -> set[str]:
    """Sample keys named in a DALI v1.2 index (lines of `ext offset size key.ext` groups)."""
    keys = set()
    for line in index.read_text().splitlines()[1:]:
        fields = line.split()
        keys.update(fields[i].split(".", 1)[0] for i in range(3, len(fields), 4))
    return keys


def _atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` via a temp file + rename, so readers see old or new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class _OpenShard:
    """The shard being filled: its writer and what it holds so far."""

    index: int
    tmp_path: Path
    writer: TarWriter
    num_samples: int = 0
    num_bytes: int = 0
    codecs: Counter = field(default_factory=Counter)
    duration_s: float = 0.0


class ShardWriter:
    """Context manager that streams samples into size-limited WebDataset shards.

    A shard closes before `max_samples` is passed or before its members (data plus
    512-byte tar headers) would pass `max_bytes`; a lone sample larger than
    `max_bytes` still gets a shard of its own.

    Usage::

        with ShardWriter("out/train", max_samples=1000) as sw:
            sw.write("clip_000001", {"mp4": video_bytes, "json": meta_bytes},
                     codec="h264", duration=2.0)
            sw.add_failure("clip_000002", "undecodable")

    If an exception escapes the `with` block, finished shards are kept, the
    partial temp shard is deleted and shards.json still lists what finished.
    With `resume=True` the shards an earlier build finished (listed in its
    shards.json, tar and idx present) are kept, `done_keys()` names their
    samples, and new shards continue after the last one.
    """

    def __init__(
        self,
        out_prefix: str | Path,
        max_samples: int = 1000,
        max_bytes: int = 1 << 30,
        command: str | None = None,
        resume: bool = False,
        checkpoint_manifest: bool = False,
        build_info: dict[str, Any] | None = None,
    ) -> None:
        if max_samples < 1:
            raise ValueError(f"ShardWriter: max_samples must be >= 1, got {max_samples}")
        if max_bytes < 1:
            raise ValueError(f"ShardWriter: max_bytes must be >= 1, got {max_bytes}")
        prefix = Path(out_prefix)
        if not prefix.name:
            raise ValueError(f"ShardWriter: out_prefix needs a file-name part, got {out_prefix!r}")
        self.folder = prefix.parent
        self.name = prefix.name
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.command = command if command is not None else " ".join(sys.argv)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._keys: set[str] = set()
        self._open: _OpenShard | None = None
        self._next_index = 0
        self._shards: list[dict[str, Any]] = []
        self._codecs: Counter = Counter()
        self._duration_s = 0.0
        self._failures: list[dict[str, str]] = []
        self._closed = False
        # checkpoint_manifest: rewrite shards.json after every finished shard, so even a killed build
        # leaves a manifest that lists exactly the finished shards (what a resumed build keeps).
        self.checkpoint_manifest = checkpoint_manifest
        self.build_info = build_info
        if resume:
            self._resume()

    # -- paths ---------------------------------------------------------------
    def shard_path(self, index: int) -> Path:
        """Final path of shard `index` (`<name>-%06d.tar`)."""
        return self.folder / f"{self.name}-{index:06d}.tar"

    def index_path(self, index: int) -> Path:
        """Final path of the DALI index for shard `index`."""
        return self.folder / f"{self.name}-{index:06d}.idx"

    @property
    def manifest_path(self) -> Path:
        """Where shards.json goes: `<out_prefix>.shards.json`."""
        return self.folder / f"{self.name}.shards.json"

    @property
    def num_samples(self) -> int:
        """Samples written so far, including the shard still open."""
        open_count = self._open.num_samples if self._open else 0
        return sum(s["num_samples"] for s in self._shards) + open_count

    # -- writing -------------------------------------------------------------
    def write(
        self,
        key: str,
        members: dict[str, bytes],
        codec: str | None = None,
        duration: float | None = None,
    ) -> None:
        """Add one sample (`__key__` = key) with members such as {"mp4": ..., "json": ...}."""
        if self._closed:
            raise RuntimeError(f"ShardWriter {self.name!r} is closed; cannot write key {key!r}")
        self._check_sample(key, members)
        size = sum(_tar_entry_bytes(memoryview(v).nbytes) for v in members.values())
        shard = self._open
        if shard is not None and (
            shard.num_samples >= self.max_samples or shard.num_bytes + size > self.max_bytes
        ):
            self._finish_shard()
            shard = None
        if shard is None:
            shard = self._open_shard()
        shard.writer.write({"__key__": key, **members})
        self._keys.add(key)
        shard.num_samples += 1
        shard.num_bytes += size
        if codec is not None:
            shard.codecs[codec] += 1
        if duration is not None:
            shard.duration_s += float(duration)

    def add_failure(self, key: str, reason: str, detail: str = "", source: str = "") -> None:
        """Record an input that was skipped, so the manifest says what is missing and why.

        `reason` is a short stable word (missing_file, undecodable, zero_frames, empty_caption ...);
        `detail` the error text and `source` the input path, both kept only when given.
        """
        record = {"key": str(key), "reason": str(reason)}
        record.update({k: str(v) for k, v in (("detail", detail), ("source", source)) if v})
        self._failures.append(record)

    def done_keys(self) -> set[str]:
        """Keys of the samples in finished shards (after resume: also those of the earlier build)."""
        return set(self._keys)

    def _resume(self) -> None:
        """Adopt the finished shards an earlier build listed in shards.json."""
        if not self.manifest_path.is_file():
            return
        try:
            previous = json.loads(self.manifest_path.read_text())
            entries = list(previous["shards"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{self.manifest_path}: cannot resume, not a shards.json ({err})") from err
        for entry in entries:
            tar, idx = self.folder / entry["path"], self.folder / entry.get("idx", "")
            if not (tar.is_file() and idx.is_file() and tar.stat().st_size == entry.get("bytes")):
                log.warning("%s: shard %s from the earlier build is missing or changed; rebuilding its samples",
                            self.name, entry["path"])
                continue
            self._shards.append(entry)
            self._keys.update(_index_keys(idx))
            self._codecs.update(entry.get("codecs", {}))
            self._duration_s += float(entry.get("duration_s", 0.0))
            self._next_index = max(self._next_index, int(entry["path"][-10:-4]) + 1)

    def _check_sample(self, key: str, members: dict[str, bytes]) -> None:
        """Reject keys/members that would break WebDataset or DALI sample grouping."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"sample key must be a non-empty string, got {key!r}")
        if "." in key:
            # Readers split `<key>.<ext>` at the first dot of the file name.
            raise ValueError(f"sample key {key!r} must not contain '.'")
        if key in self._keys:
            raise ValueError(f"duplicate sample key {key!r} in shard set {self.name!r}")
        if not members:
            raise ValueError(f"sample {key!r} has no members")
        for ext, value in members.items():
            if not isinstance(ext, str) or not ext or ext.startswith("_") or "/" in ext:
                raise ValueError(f"sample {key!r}: bad member name {ext!r} (expected e.g. 'mp4')")
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise TypeError(
                    f"sample {key!r}: member {ext!r} must be bytes, got {type(value).__name__}"
                )

    # -- shard lifecycle -----------------------------------------------------
    def _open_shard(self) -> _OpenShard:
        """Start the next shard under a temp name."""
        index = self._next_index
        self._next_index += 1
        tmp_path = self.shard_path(index).with_suffix(".tar.tmp")
        writer = TarWriter(str(tmp_path), encoder=False, mtime=_TAR_MTIME)
        self._open = _OpenShard(index=index, tmp_path=tmp_path, writer=writer)
        return self._open

    def _finish_shard(self) -> None:
        """Close the open shard, index it with DALI's IndexCreator and move both into place."""
        shard = self._open
        if shard is None:
            return
        self._open = None
        idx_tmp = self.index_path(shard.index).with_suffix(".idx.tmp")
        try:
            shard.writer.close()
            with IndexCreator(str(shard.tmp_path), str(idx_tmp), verbose=False) as creator:
                creator.create_index()
        except BaseException:
            for path in (shard.tmp_path, idx_tmp):
                path.unlink(missing_ok=True)
            raise
        # The index lands first, so whenever a final .tar exists its .idx does too.
        os.replace(idx_tmp, self.index_path(shard.index))
        os.replace(shard.tmp_path, self.shard_path(shard.index))
        self._shards.append(
            {
                "path": self.shard_path(shard.index).name,
                "idx": self.index_path(shard.index).name,
                "num_samples": shard.num_samples,
                "bytes": self.shard_path(shard.index).stat().st_size,
                "codecs": dict(sorted(shard.codecs.items())),
                "duration_s": round(shard.duration_s, 6),
            }
        )
        self._codecs.update(shard.codecs)
        self._duration_s += shard.duration_s
        if self.checkpoint_manifest:
            _atomic_write_text(self.manifest_path, json.dumps(self.manifest(), indent=1) + "\n")

    def _abort_shard(self) -> None:
        """Drop the open shard: its samples are lost, but no partial file is left behind."""
        shard = self._open
        if shard is None:
            return
        self._open = None
        try:
            shard.writer.close()
        except Exception:  # the stream may already be broken; removal is what matters
            log.debug("closing aborted shard %s failed", shard.tmp_path, exc_info=True)
        shard.tmp_path.unlink(missing_ok=True)
        log.warning(
            "%s: dropped unfinished shard %d (%d samples) after an error",
            self.name, shard.index, shard.num_samples,
        )

    # -- manifest & closing --------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """The shards.json content for the shards finished so far."""
        return {
            "name": self.name,
            "num_samples": sum(s["num_samples"] for s in self._shards),
            "shards": list(self._shards),
            "codecs": dict(sorted(self._codecs.items())),
            "total_duration_s": round(self._duration_s, 6),
            "failures": list(self._failures),
            "command": self.command,
            **({"build": self.build_info} if self.build_info is not None else {}),
        }

    def close(self, abort: bool = False) -> dict[str, Any]:
        """Finish (or, with abort=True, drop) the open shard and write shards.json.

        Returns the manifest. Safe to call twice.
        """
        if self._closed:
            return self.manifest()
        self._closed = True
        try:
            if abort:
                self._abort_shard()
            else:
                self._finish_shard()
        finally:
            # Even if finishing the last shard failed, record what did finish.
            manifest = self.manifest()
            _atomic_write_text(self.manifest_path, json.dumps(manifest, indent=1) + "\n")
            self._warn_stale_shards()
        return manifest

    def _warn_stale_shards(self) -> None:
        """Flag shards from an earlier, larger build: a glob over the folder would pick them up."""
        pattern = re.compile(rf"{re.escape(self.name)}-(\d{{6}})\.tar")
        written = {s["path"] for s in self._shards}
        stale = sorted(
            p.name for p in self.folder.iterdir()
            if pattern.fullmatch(p.name) and p.name not in written
        )
        if stale:
            log.warning(
                "%s: %d shard(s) not from this build remain in %s (e.g. %s); "
                "they are not listed in %s",
                self.name, len(stale), self.folder, stale[0], self.manifest_path.name,
            )

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(abort=exc_type is not None)
