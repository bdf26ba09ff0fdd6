"""Visual Genome `region_descriptions.json` ([{id, regions: [{phrase, image_id, ...}]}]): the distinct region
phrases of an image are its captions, media at `<media_root>/[VG_100K|VG_100K_2]/<id>.jpg`. Pre-training only:
shards, no annotation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from snps3_ds.datasets.base import ReaderOptions, SourceItem, find_media, json_list, safe_key


def key(image_id: int | str) -> str:
    """The shard key of a Visual Genome image: `vg_<id>`."""
    return safe_key(f"vg_{image_id}")


def read_items(manifest: Path, media_root: Path, options: ReaderOptions) -> Iterator[SourceItem]:
    """One image sample per entry; entries without an id (and no region naming one) are passed over."""
    data = json_list(manifest, "VG region descriptions (a JSON list of {id, regions})")
    for entry in data:
        regions = entry.get("regions") or []
        ident = entry.get("id", regions[0]["image_id"] if regions else None)
        if ident is None:
            continue
        phrases = list(dict.fromkeys(str(r.get("phrase", "")).strip() for r in regions))
        path = find_media(media_root, [f"{ident}.jpg", f"VG_100K/{ident}.jpg", f"VG_100K_2/{ident}.jpg"])
        yield SourceItem(key=key(ident), path=path, captions=[p for p in phrases if p], source="visual_genome",
                         kind="image", extra={"image_id": ident})
