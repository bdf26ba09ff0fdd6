"""Build a small synthetic video-text corpus as WebDataset shards (DESIGN §3.1).

Each clip shows one or two coloured shapes moving on a plain background; its
captions name the colours, shapes, sizes, motions and (sometimes) the
background, so a tiny model can learn real video-text alignment in minutes and
the stored `attributes` can later be turned into QA tasks.

    python data_prep/make_demo_corpus.py --out data/demo --train 2000 --test 200

Output is deterministic for a seed: every clip draws from its own RNG derived
from (seed, split, index), and samples are written in index order whatever the
number of worker processes.

Downstream tasks (retrieval, QA, multi-choice; snps3_ds/demo/tasks.py,
snps3_ds.demo.tasks) go to OUT/tasks/: `--tasks` builds the corpus and then the
tasks; `--tasks-only` writes just the tasks for the corpus already in --out
(about a second: facts and captions are read from the shard json members, no
clip is rendered, the shards are not touched). `--seed` also seeds the task
draws (question order is fixed; distractor captions and option order vary).

    python data_prep/make_demo_corpus.py --out data/demo --tasks-only
"""

from snps3_ds.demo.cli import main

if __name__ == "__main__":
    main()
