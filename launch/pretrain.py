"""Pre-train SNP-S3 with DeepSpeed (or the plain-torch engine), from one CPU process to many nodes.

    deepspeed --num_gpus 2 launch/pretrain.py --ds_config ds_configs/zero2.json [--config RECIPE] [a.b=value ...]
    deepspeed --hostfile hosts launch/pretrain.py --ds_config ds_configs/zero2.json --config RECIPE --resume auto
    python launch/pretrain.py --engine torch --config RECIPE train.max_steps=10

Without --config the demo recipe is used (its corpus is built on first use). The run flow lives in
snps3_ds.run.training; this script only parses the command line.
"""

import sys

from snps3_ds.run.pretrain import main
from snps3_ds.run.training import exit_code

if __name__ == "__main__":
    sys.exit(exit_code(main(description=__doc__.splitlines()[0])))
