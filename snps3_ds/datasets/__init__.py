"""Public datasets, one module per format, each with one key function (`msrvtt.key`, `didemo.key` ...) that
its shard reader (SourceItems for snps3_ds.sharding) and its annotation reader (snps3_ds.downstream Annotation)
both use, so the shard keys and the keys annotations join on agree by construction.

    base       SourceItem, ReaderOptions, ManifestError, safe_key, find_media, BadRows (what they share)
    msrvtt     MSRVTT_data.json, the 7k/9k train lists, MSRVTT-QA, MSR-VTT multiple choice
    jsfusion   MSRVTT_JSFUSION_test.csv (the 1k-A test, ',' or ';')
    msvd       AllVideoDescriptions.txt + split lists, MSVD-QA with youtube_mapping.txt
    didemo     {train,val,test}_data.json (paragraph retrieval)
    qa         the Xu et al. QA json that MSRVTT-QA and MSVD-QA share
    webvid, cc3m, coco, vg, generic (jsonl/csv), wds (existing shards): shard readers only
    registry   FORMATS and read_manifest, the shard builder's --format table
    annotations_cli  build_annotations: public files -> an annotation file

The package imports nothing itself; import the module you need.
"""
