"""Image-caption sets: COCO captions and Visual Genome region descriptions (images become one-frame clips)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from snps3_ds.datasets.base import load_json_manifest, ManifestError, ReaderOptions, SourceItem, find_media, group_captions


def read_coco(manifest: Path, media_root: Path, options: ReaderOptions) -> Iterator[SourceItem]:
    """COCO captions JSON (`images` [{id, file_name}], `annotations` [{image_id, caption}]); all captions of
    an image in one sample; media at `<media_root>/<file_name>`."""
    data = load_json_manifest(manifest)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ManifestError(f"{manifest}: expected COCO captions JSON with 'images' and 'annotations'")
    captions = group_captions([(str(a["image_id"]), str(a.get("caption", "")).strip())
                               for a in data["annotations"] if str(a.get("caption", "")).strip()])
    for image in data["images"]:
        ident = str(image["id"])
        yield SourceItem(key=f"coco_{ident}", path=media_root / image["file_name"], captions=captions.get(ident, []),
                         source="coco", kind="image", extra={"image_id": image["id"]})


def read_visual_genome(manifest: Path, media_root: Path, options: ReaderOptions) -> Iterator[SourceItem]:
    """Visual Genome `region_descriptions.json` ([{id, regions: [{phrase, ...}]}]); the distinct region
    phrases are the captions; media at `<media_root>/[VG_100K|VG_100K_2]/<id>.jpg`."""
    data = load_json_manifest(manifest)
    if not isinstance(data, list):
        raise ManifestError(f"{manifest}: expected VG region descriptions (a JSON list of {{id, regions}})")
    for entry in data:
        regions = entry.get("regions") or []
        ident = entry.get("id", regions[0]["image_id"] if regions else None)
        if ident is None:
            continue
        phrases = list(dict.fromkeys(str(r.get("phrase", "")).strip() for r in regions))
        path = find_media(media_root, [f"{ident}.jpg", f"VG_100K/{ident}.jpg", f"VG_100K_2/{ident}.jpg"])
        yield SourceItem(key=f"vg_{ident}", path=path, captions=[p for p in phrases if p], source="visual_genome",
                         kind="image", extra={"image_id": ident})
