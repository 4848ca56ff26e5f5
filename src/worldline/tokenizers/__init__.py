"""Causal video tokenizers (continuous autoencoder and discrete FSQ). Importing registers them."""
