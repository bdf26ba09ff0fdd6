"""Performance accounting: FLOPs per training sample, GPU peak throughput and MFU (DESIGN §5 logging)."""
