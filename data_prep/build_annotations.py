"""Write a downstream-task annotation file from a benchmark's public files (formats: --help).

    python data_prep/build_annotations.py msrvtt_qa train_qa.json --out ann/msrvtt_qa_train.json

The formats, their files and the QA vocabulary rules: snps3_ds/datasets/annotations_cli.py.
"""

from snps3_ds.datasets.annotations_cli import main

if __name__ == "__main__":
    main()
