"""Fine-tune a pre-trained SNP-S3 model on a downstream task: text-video retrieval, open-ended video QA or
multi-choice QA, with the pre-training trainer, engines, checkpoints, resume and logging.

    deepspeed --num_gpus 8 launch/finetune.py --task retrieval --config launch/recipes/ft_msrvtt_ret_9k.yaml \\
        --ds_config ds_configs/finetune.json --init runs/pretrain/export
    python launch/finetune.py --engine torch --task qa --config launch/recipes/demo_ft_qa.yaml --init runs/demo/checkpoints

--init takes a checkpoint folder (the newest complete tag), one tag folder, or a launch/export.py folder;
only the `model.*` weights are taken (a fine-tuned QA checkpoint's answer head is not re-used).
"""

import sys

from snps3_ds.run.finetune import main
from snps3_ds.run.training import exit_code

if __name__ == "__main__":
    sys.exit(exit_code(main(description=__doc__.splitlines()[0])))
