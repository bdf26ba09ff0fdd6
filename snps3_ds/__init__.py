"""snps3_ds: SNP-S3 video-text pre-training at scale (DeepSpeed, WebDataset, DALI/decord)."""

__version__ = "0.1.0"
