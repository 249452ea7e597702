"""What a reviewer reads: the metrics table, the figures, the claims, the robustness check and the summary."""
