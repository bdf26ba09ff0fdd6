"""Reading one raw shard sample: its metadata, captions and media member, with a reason for every refusal.

Two layouts are accepted: ours (DESIGN §3.1: `json` with `captions`) and video2dataset/img2dataset's
(`txt` caption beside a `json` whose `caption` may be missing; the json also carries fields such as
`clips` that describe the source video, not the clip, and are ignored).
"""

from __future__ import annotations

import json
from typing import Any

from snps3_ds.data.errors import DecodeError

VIDEO_EXTENSIONS = ("mp4", "webm", "avi", "mkv", "mov")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS


def _text(data: bytes | str, member: str, reason: str) -> str:
    if isinstance(data, str):
        return data
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as err:
        raise DecodeError(reason, f"{member} member is not UTF-8 ({err.reason} at byte {err.start})") from err


def _clean(captions: Any) -> list[str]:
    if isinstance(captions, str):
        captions = [captions]
    if not isinstance(captions, list):
        return []
    return [c.strip() for c in captions if isinstance(c, str) and c.strip()]


def sample_meta(raw: dict[str, Any]) -> dict[str, Any]:
    """The sample's json as a dict with a non-empty `captions` list, or DecodeError naming the reason.

    Captions come from json `captions`, else json `caption`, else the `txt` member. Reasons: missing_json,
    bad_json (not UTF-8, not JSON, not an object), non_utf8_caption (txt), no_caption.
    """
    if "json" not in raw:
        raise DecodeError("missing_json", f"members: {sorted(k for k in raw if not k.startswith('__'))}")
    try:
        meta = json.loads(_text(raw["json"], "json", "bad_json"))
    except json.JSONDecodeError as err:
        raise DecodeError("bad_json", str(err)[:100]) from err
    if not isinstance(meta, dict):
        raise DecodeError("bad_json", f"expected a JSON object, got {type(meta).__name__}")
    captions = _clean(meta.get("captions")) or _clean(meta.get("caption"))
    if not captions and "txt" in raw:
        captions = _clean(_text(raw["txt"], "txt", "non_utf8_caption"))
    if not captions:
        raise DecodeError("no_caption", "no non-empty caption in json captions/caption or txt")
    meta["captions"] = captions
    for bound in ("start", "end"):
        if not isinstance(meta.get(bound), (int, float)) or isinstance(meta.get(bound), bool):
            meta.pop(bound, None)
    return meta


def media_member(raw: dict[str, Any]) -> tuple[str, bytes]:
    """(extension, bytes) of the sample's video or image member."""
    ext = next((e for e in MEDIA_EXTENSIONS if e in raw), None)
    if ext is None:
        raise DecodeError("missing_media", f"members: {sorted(k for k in raw if not k.startswith('__'))}")
    if not raw[ext]:
        raise DecodeError("missing_media", f"empty .{ext} member")
    return ext, raw[ext]
