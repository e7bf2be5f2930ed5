"""A scripted malicious aggregator driving the real silo code (issue 11, item 8)."""
