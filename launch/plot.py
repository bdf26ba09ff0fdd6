"""Plot a run's curves from RUN_DIR/metrics.jsonl: one small panel per key group, saved as a PNG.

    python launch/plot.py runs/demo                         # -> runs/demo/curves.png
    python launch/plot.py runs/demo --out demo.png --keys 'train/*' 'val/*R@1'
"""

from snps3_ds.reports.curves import main

if __name__ == "__main__":
    main()
