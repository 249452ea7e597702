"""The synthetic track: the hierarchical latent generator, the theorem's prediction, per-seed and
longer training, and the probes against the true latents."""
