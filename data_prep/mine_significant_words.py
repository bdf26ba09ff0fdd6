"""Mine the significant-word table that MSSM masking and LVWM word choice read (DESIGN §3.4).

    python data_prep/mine_significant_words.py --input data/demo/train --out data/demo/significance
    python data_prep/mine_significant_words.py --input shards/webvid/train captions.jsonl --out sig --workers 8

Pipeline (the reference's, with its known losses fixed): POS-tag every caption with spaCy's English small
model and count surface words tagged VERB/NOUN/ADJ (NUM counted, unused); map each word onto the tokenizer
vocabulary with the tokenizer's own normaliser (lower-casing for an uncased vocab, so capitalised words
count instead of being lost); drop single characters and the abandon list; total = VERB+NOUN+ADJ; rank by
total with ties sharing a rank (0-based competition ranking, zero-count tokens last); zero any POS share
under 25% and renormalise the rest. Beside the table, for each vocabulary word, the vocabulary words that
share its spaCy lemma (`running`: ran, run, running, runs), which MSSM's 10% replacement draws from.

Outputs in --out: significance.json (columns indexed by token id), lemmas.json, summary.txt.
"""

from snps3_ds.mining.mine import main

if __name__ == "__main__":
    main()
