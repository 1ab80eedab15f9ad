"""Denoising diffusion probabilistic models (Ho, Jain & Abbeel 2020) in PyTorch."""
