"""Where each sample's members sit inside a tar shard, so a sample can be read by seeking to it.

Random access is what makes the training stream resumable without re-reading consumed samples
(snps3_ds.data.stream.reader). The offsets come from the DALI `.idx` written beside every shard by the shard
writer; shards without one (built elsewhere) are indexed once by scanning their tar headers. Samples
whose bytes reach past the end of the file (a truncated shard) are left out and counted. A shard behind a
URL is indexed from its `.idx` alone (fetched, plus one byte to learn the tar's length): never scanned,
never downloaded, so a remote shard needs its `.idx` beside it.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from snps3_ds.data.stream.remote import ShardFiles, is_url, sibling

# webdataset's rule: the key is the path up to the first dot of the file name, the rest is the extension.
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)[.]([^/]*)$")
_TAR_BLOCK = 512


@dataclass(frozen=True)
class Member:
    ext: str
    offset: int  # of the member's data in the tar file
    size: int
    name: str


@dataclass(frozen=True)
class IndexedSample:
    key: str
    members: tuple[Member, ...]


@dataclass
class ShardIndex:
    url: str
    samples: list[IndexedSample]
    dropped: int = 0  # samples left out because their bytes are missing (truncated shard)
    source: str = "idx"  # "idx" | "scan"


def _group(url: str, members: list[Member], file_size: int) -> ShardIndex:
    samples: list[IndexedSample] = []
    current: list[Member] = []
    current_key: str | None = None
    dropped = 0

    def close() -> None:
        nonlocal dropped
        if current_key is None:
            return
        if all(m.offset + m.size <= file_size for m in current):
            samples.append(IndexedSample(current_key, tuple(current)))
        else:
            dropped += 1

    for member in members:
        match = _KEY_EXT.match(member.name)
        if not match:
            continue
        key = match.group(1)
        if key != current_key:
            close()
            current, current_key = [], key
        current.append(Member(match.group(2).lower(), member.offset, member.size, member.name))
    close()
    return ShardIndex(url, samples, dropped)


def _read_dali_index(text: str, idx: Path | str) -> list[Member]:
    """Members from a DALI v1.x index: a `v1.x N` line, then one line per sample of `ext offset size name` groups."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("v1."):
        raise ValueError(f"{idx}: expected a DALI webdataset index starting with 'v1.x', got {lines[:1]}")
    members = []
    for number, line in enumerate(lines[1:], 2):
        fields = line.split()
        if len(fields) % 4:
            raise ValueError(f"{idx}:{number}: expected groups of `ext offset size name`, got {len(fields)} fields")
        for i in range(0, len(fields), 4):
            members.append(Member(fields[i], int(fields[i + 1]), int(fields[i + 2]), fields[i + 3]))
    return members


def _scan_tar(url: str) -> tuple[list[Member], bool]:
    """(members, complete) from the tar headers; a truncated or damaged tar gives what came before the damage."""
    members: list[Member] = []
    try:
        with tarfile.open(url, "r:") as tar:
            for info in tar:
                if info.isfile():
                    members.append(Member("", info.offset_data, info.size, info.name))
    except (tarfile.TarError, EOFError, OSError):
        return members, False
    return members, True


def index_shard(url: str, files: ShardFiles | None = None) -> ShardIndex:
    """The shard's samples in file order, from its `.idx` when present and consistent, else from its headers."""
    if is_url(url):
        return _remote_index(url, files or ShardFiles())
    path = Path(url)
    size = path.stat().st_size
    idx = path.with_suffix(".idx")
    if idx.is_file():
        try:
            index = _group(url, _read_dali_index(idx.read_text(encoding="utf-8"), idx), size)
            if not index.samples or _header_names_member(path, index.samples[0].members[0]):
                return index
        except ValueError:
            pass  # an unreadable or stale index: the tar itself is the truth
    members, complete = _scan_tar(url)
    index = _group(url, members, size)
    index.source = "scan"
    if not complete:
        index.dropped += 1  # the damaged tail: at least one sample is lost
    return index


def _header_names_member(path: Path, member: Member) -> bool:
    """Whether the tar header just before `member` names it (a cheap staleness check of an `.idx`)."""
    if member.offset < _TAR_BLOCK or len(member.name) >= 100:
        return True  # long names live in an extra header; nothing cheap to compare
    with path.open("rb") as handle:
        handle.seek(member.offset - _TAR_BLOCK)
        header = handle.read(100)
    return header.rstrip(b"\0").decode("utf-8", "replace") == member.name


def _remote_index(url: str, files: ShardFiles) -> ShardIndex:
    """A remote shard's samples from its `.idx`, trusted as written (the shard writer writes it before the tar)."""
    idx = sibling(url, ".idx")
    try:
        text = files.read_all(idx).decode("utf-8")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{url}: no index at {idx}; shards behind URLs are read by offset and need the DALI "
                                f"index beside each tar (data_prep/build_shards.py writes it; for other tars run "
                                f"`wds2idx X.tar X.idx` and upload it)") from err
    return _group(url, _read_dali_index(text, idx), files.size(url))
