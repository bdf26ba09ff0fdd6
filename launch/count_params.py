"""Count the parameters of the model a recipe builds: total and per module (tied tensors once).

    python launch/count_params.py --config launch/recipes/coco_vg_r50.yaml [a.b=value ...]
    python launch/count_params.py --config launch/recipes/coco_vg_r50.yaml --text-size bert-base --compare-fusion
    python launch/count_params.py --table2     # the paper's Table II: SNP/P3E x R50/PVT, BERT-base from a config
"""

from snps3_ds.run.params import main

if __name__ == "__main__":
    main(description=__doc__.splitlines()[0])
