"""Print several evaluation results side by side (e.g. zero-shot vs fine-tuned).

    python launch/compare_results.py zero-shot=runs/x/zs.json,runs/x/zs_qa.json fine-tuned=runs/ft/eval_final.json \\
        [--same zs_=] [--keys 'demo_test/t2v/R@' 'qa/acc']
"""

from snps3_ds.reports.compare import main

if __name__ == "__main__":
    main()
