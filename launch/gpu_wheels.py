"""Wheels for the air-gapped GPU node (snps3_ds/perf/gpu_check/wheels.py).

    python launch/gpu_wheels.py download gpu_wheels          # here, with PyPI: base/ (one transfer) + dali/part-NN
    python launch/gpu_wheels.py unpack gpu_wheels gpu_site   # on the node: extract what has arrived
"""

import argparse
import json
from pathlib import Path

from snps3_ds.perf.gpu_check.wheels import download, unpack

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("download", help="fetch the node's wheels from PyPI (run where PyPI is reachable)")
    fetch.add_argument("out", type=Path)
    place = commands.add_parser("unpack", help="extract the carried wheels into a folder for PYTHONPATH")
    place.add_argument("wheels", type=Path)
    place.add_argument("site", type=Path)
    args = parser.parse_args()
    result = download(args.out) if args.command == "download" else unpack(args.wheels, args.site)
    print(json.dumps(result, indent=1), flush=True)
