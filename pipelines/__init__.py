"""Training pipelines a coordinator runs: the local demo, Fed-Heart-Disease, imaging."""
