"""Evaluate retrieval, open-ended QA or multi-choice QA on held-out shards (one process or many ranks).

    python launch/evaluate.py --config RECIPE --checkpoint RUN_DIR/checkpoints [--out results.json]
    python launch/evaluate.py --config RECIPE --out before.json            # the untrained model
    python launch/evaluate.py ... --baseline before.json                   # print both side by side
    python launch/evaluate.py ... --report gallery                         # gallery/index.html: worst queries
    python launch/evaluate.py --config RECIPE --annotation msrvtt_1ka.json --checkpoint CKPT --rerank 16
    python launch/evaluate.py --config RECIPE --annotation msrvtt_qa_test.json --checkpoint QA_EXPORT_DIR
    python launch/evaluate.py --config RECIPE --annotation msrvtt_qa_test.json --checkpoint CKPT --qa-fusion
    deepspeed --num_gpus 2 launch/evaluate.py --config RECIPE --annotation msrvtt_mc.json --checkpoint CKPT

--checkpoint takes a checkpoint folder, a tag folder, a .safetensors file or an export folder holding
model.safetensors. The protocols are described in snps3_ds.run.evaluate.
"""

import sys

from snps3_ds.run.evaluate import main

if __name__ == "__main__":
    main(description=__doc__.splitlines()[0])
    sys.exit(0)
