"""Print the ds_config a run on this machine should use: the bf16 one on a GPU or on a CPU that computes bf16
natively (AVX512_BF16 / AMX), the fp32 one where bf16 would be emulated (slower). The reason goes to stderr.

    deepspeed ... --ds_config $(python launch/pick_ds_config.py ds_configs/zero2.json ds_configs/zero2_fp32.json)

SNPS3_CPU_BF16=0 (or 1) overrides the CPU detection, e.g. to try the fp32 path on a CPU with native bf16.
"""

import argparse
import sys

import torch

from snps3_ds.perf.cpu_features import choose_ds_config

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bf16_config", help="ds_config to use where bf16 is native")
    parser.add_argument("fp32_config", help="ds_config to use where bf16 is emulated")
    args = parser.parse_args()
    path, why = choose_ds_config(args.bf16_config, args.fp32_config, torch.cuda.is_available())
    print(f"ds_config: {path} ({why})", file=sys.stderr, flush=True)
    print(path)
