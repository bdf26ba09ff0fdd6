"""Tar + idx pairs for DALI's webdataset reader, checked before DALI sees them.

DALI trusts its index: a tar cut short after the index was written makes the reader fail inside the
pipeline and stop the run. So every shard is checked here (index present and parseable, tar at least as
long as the index says); a bad shard is reported and left out instead. Shards without an index beside
them (e.g. video2dataset output) get one built into a cache folder with DALI's own `wds2idx` writer.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def index_path_for(url: str) -> Path:
    """`X-000000.idx` beside `X-000000.tar`."""
    return Path(url).with_suffix(".idx")


def _cache_dir() -> Path:
    root = os.environ.get("SNPS3_IDX_CACHE") or os.path.join(tempfile.gettempdir(), "snps3_ds_idx")
    Path(root).mkdir(parents=True, exist_ok=True)
    return Path(root)


def build_index(url: str) -> Path:
    """An index for a tar that has none, written once into the cache (keyed by path, size and mtime)."""
    from wds2idx import IndexCreator

    stat = Path(url).stat()
    digest = hashlib.sha1(f"{Path(url).resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = _cache_dir() / f"{Path(url).stem}-{digest}.idx"
    if not target.is_file():
        tmp = target.with_suffix(".idx.tmp")
        with IndexCreator(url, str(tmp), verbose=False) as creator:
            creator.create_index()
        os.replace(tmp, target)
    return target


def index_end(index: Path) -> int:
    """The byte where the last member the index lists ends (v1.2 lines: `ext offset size name ...`;
    older versions have no name field)."""
    lines = index.read_text().splitlines()
    if not lines or not lines[0].startswith("v1."):
        raise ValueError(f"{index}: not a DALI webdataset index (expected a 'v1.x N' header)")
    step = 4 if lines[0].split()[0] >= "v1.2" else 3
    end = 0
    for line in lines[1:]:
        fields = line.split()
        for i in range(0, len(fields) - step + 1, step):
            end = max(end, int(fields[i + 1]) + int(fields[i + 2]))
    return end


def checked_shards(urls: list[str]) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """(tar paths, index paths, [(bad tar, reason)]) with every bad shard left out of the first two."""
    paths, indexes, bad = [], [], []
    for url in urls:
        try:
            index = index_path_for(url)
            index = index if index.is_file() else build_index(url)
            size = Path(url).stat().st_size
            if index_end(index) > size:
                raise ValueError(f"tar is {size} bytes but its index {index} reaches byte {index_end(index)}")
        except Exception as err:  # noqa: BLE001 - any shard we cannot vouch for is skipped, with its reason
            reason = "truncated_shard" if "reaches byte" in str(err) else "bad_shard"
            log.warning("leaving shard %s out of the DALI reader (%s): %s", url, reason, err)
            bad.append((url, reason))
            continue
        paths.append(url)
        indexes.append(str(index))
    return paths, indexes, bad
