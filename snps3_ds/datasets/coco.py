"""COCO captions JSON (`images` [{id, file_name}], `annotations` [{image_id, caption}]): all captions of an
image in one one-frame sample, media at `<media_root>/<file_name>`. Pre-training only: shards, no annotation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from snps3_ds.datasets.base import ManifestError, ReaderOptions, SourceItem, group_captions, load_json, safe_key


def key(image_id: int | str) -> str:
    """The shard key of a COCO image: `coco_<id>` (the prefix keeps it apart from other sets' numeric ids)."""
    return safe_key(f"coco_{image_id}")


def read_items(manifest: Path, media_root: Path, options: ReaderOptions) -> Iterator[SourceItem]:
    """One image sample per entry of `images`."""
    data = load_json(manifest, "COCO captions JSON")
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ManifestError(f"{manifest}: expected COCO captions JSON with 'images' and 'annotations'")
    captions = group_captions([(str(a["image_id"]), str(a.get("caption", "")).strip())
                               for a in data["annotations"] if str(a.get("caption", "")).strip()])
    for image in data["images"]:
        ident = str(image["id"])
        yield SourceItem(key=key(ident), path=media_root / image["file_name"], captions=captions.get(ident, []),
                         source="coco", kind="image", extra={"image_id": image["id"]})
