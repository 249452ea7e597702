"""mae-hlvm: which latent level does a masked autoencoder learn?"""

__version__ = "0.1.0"
