"""Mine the significant-word table that MSSM masking and LVWM word choice read (DESIGN §3.4).

    python data_prep/mine_significant_words.py --input data/demo/train --out data/demo/significance

The pipeline and its outputs: snps3_ds/mining/mine.py.
"""

from snps3_ds.mining.mine import main

if __name__ == "__main__":
    main()
