"""meshchat benchmarks: each figure beside raw baselines measured in the same run (see README)."""
