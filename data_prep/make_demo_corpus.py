"""Build the small synthetic video-text demo corpus as WebDataset shards, and/or its task files.

    python data_prep/make_demo_corpus.py --out data/demo --train 2000 --test 200 [--tasks | --tasks-only]

What the clips and captions are: snps3_ds/demo/corpus.py; the tasks: snps3_ds/demo/tasks.py.
"""

from snps3_ds.demo.cli import main

if __name__ == "__main__":
    main()
