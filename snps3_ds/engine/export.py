"""Export a checkpoint's consolidated fp32 weights as safetensors, with the recipe that built the model.

OUT/model.safetensors holds the task module's weights (`model.…`, plus any task head), gathered from the
ZeRO partitions (their fp32 master copies, not the bf16/fp16 module); OUT/config.yaml is the recipe;
OUT/export.json says where it came from. Fine-tuning (`--init OUT`) and evaluation (`--checkpoint OUT`)
read it without DeepSpeed, and without unpickling anything. The same towers are also written for other
libraries (snps3_ds.engine.hf_export): OUT/text/ (transformers BertModel + tokenizer), OUT/visual.safetensors
(timm/torchvision layout) and the model card OUT/README.md.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from snps3_ds.engine.hf_export import write_hub_formats
from snps3_ds.engine.run_checkpoints import COMPLETE, newest_complete
from snps3_ds.engine.safe_load import load_plain
from snps3_ds.engine.weights import DS_MODEL_STATES, EXPORT_FILE, load_task_state, resolve_checkpoint


def choose_tag(path: Path) -> Path:
    """A tag folder: the one given, or the newest complete one under a checkpoints folder."""
    if path.is_dir() and newest_complete(path):
        return path / newest_complete(path)
    root, tag = resolve_checkpoint(path)
    if not (root / tag / COMPLETE).is_file():
        print(f"warning: {root / tag} has no {COMPLETE} marker (written before markers existed, or cut off)",
              flush=True)
    return root / tag


def recipe_of(tag_dir: Path) -> dict:
    """The recipe saved beside the checkpoints (RUN_DIR/config.yaml), else the one in the client state."""
    beside = tag_dir.parent.parent / "config.yaml"
    if beside.is_file():
        return yaml.safe_load(beside.read_text())
    for name in (*DS_MODEL_STATES, "model_states.pt"):
        if (tag_dir / name).is_file():
            # model states hold tensors, numbers and the client state's plain dicts: no allow-list needed
            state = load_plain(tag_dir / name)
            client = state.get("client_state", state)
            config = client.get("config")
            if config:
                return config.get("recipe", config)
    raise FileNotFoundError(f"{tag_dir}: no recipe found (neither {beside} nor a client state with 'config')")


def export_checkpoint(checkpoint: Path, out: Path) -> Path:
    """Write OUT/model.safetensors, config.yaml and export.json; returns OUT."""
    from safetensors.torch import save_file

    tag_dir = choose_tag(Path(checkpoint))
    state = load_task_state(tag_dir)
    # safetensors refuses tensors that share storage (tied embeddings): each entry gets its own copy.
    tensors = {k: (v.float() if v.is_floating_point() else v).detach().cpu().contiguous().clone()
               for k, v in state.items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / EXPORT_FILE), metadata={"source": str(tag_dir.resolve())})
    (out / "config.yaml").write_text(yaml.safe_dump(recipe_of(tag_dir), sort_keys=False))
    digest = hashlib.sha256((out / EXPORT_FILE).read_bytes()).hexdigest()
    info = {"source": str(tag_dir.resolve()), "tag": tag_dir.name, "tensors": len(tensors),
            "parameters": int(sum(t.numel() for t in tensors.values())), "sha256": digest}
    (out / "export.json").write_text(json.dumps(info, indent=2))
    print(f"exported {info['tensors']} tensors ({info['parameters'] / 1e6:.2f} M values, fp32) from {tag_dir} "
          f"to {out / EXPORT_FILE}", flush=True)
    write_hub_formats(out, tensors, tag_dir)  # OUT/text/, OUT/visual.safetensors, OUT/README.md
    return out
