"""What a reviewer reads: the metrics table, the figures, the claims (with the stability set) and the summary."""
