"""Export a checkpoint's consolidated fp32 weights as safetensors, with the recipe that built the model.

    python launch/export.py RUN_DIR/checkpoints OUT_DIR            # the newest complete checkpoint
    python launch/export.py RUN_DIR/checkpoints/step_00001000 OUT_DIR

OUT_DIR/model.safetensors + config.yaml + export.json; `finetune.py --init OUT_DIR` and
`evaluate.py --checkpoint OUT_DIR` read it without DeepSpeed (snps3_ds.engine.export). Also OUT_DIR/text/
(transformers BertModel + tokenizer), OUT_DIR/visual.safetensors (timm/torchvision layout, model name in its
metadata) and the model card OUT_DIR/README.md (snps3_ds.engine.hf_export).
"""

import argparse
import sys
from pathlib import Path

from snps3_ds.engine.export import export_checkpoint

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a run's checkpoints folder (newest complete tag) or one tag folder")
    parser.add_argument("out", help="output folder")
    args = parser.parse_args()
    export_checkpoint(Path(args.checkpoint), Path(args.out))
    sys.exit(0)
