"""Write a downstream-task annotation file (snps3_ds.downstream.annotations) from a benchmark's public files.

    python data_prep/build_annotations.py FORMAT FILE [FILE] --out OUT.json [--split-name NAME]
        [--answers TRAIN_ANN.json | --top-answers N] [--skip-bad]

FORMAT and its files, in this order (the split name, a metric prefix, comes from the file name unless
--split-name is given):
    msrvtt_train  MSRVTT_train.{7k,9k}.csv MSRVTT_data.json   -> retrieval, msrvtt_{7k,9k}_train
    msrvtt_1ka    MSRVTT_JSFUSION_test.csv                     -> retrieval, msrvtt_1ka
    didemo        {train,val,test}_data.json                   -> retrieval (paragraphs), didemo_<split>
    msvd          AllVideoDescriptions.txt {train,val,test}_list.txt  -> retrieval, msvd_<split>
    msrvtt_qa     {train,val,test}_qa.json                     -> qa, msrvtt_qa_<split>
    msvd_qa       {train,val,test}_qa.json youtube_mapping.txt -> qa, msvd_qa_<split>
    msrvtt_mc     MSRVTT_MC_test.json (or .jsonl, or MSR_MC_test.csv)  -> mcqa, msrvtt_mc

QA answer vocabulary: a training file gets the top-N answers of that file (--top-answers, default 1500 for
msrvtt_qa and 1000 for msvd_qa; ties go to the answer seen first). Val/test files must share it:
pass --answers with the training annotation; their answers outside it get label -1 (wrong at test).
The share of questions the vocabulary covers is printed.

Bad rows (missing or malformed fields) stop the run with a message naming file, line/item and key;
--skip-bad leaves them out and prints their count instead.

    python data_prep/build_annotations.py msrvtt_qa train_qa.json --out ann/msrvtt_qa_train.json
    python data_prep/build_annotations.py msrvtt_qa test_qa.json --answers ann/msrvtt_qa_train.json \\
        --out ann/msrvtt_qa_test.json
"""

from snps3_ds.datasets.annotations_cli import main

if __name__ == "__main__":
    main()
