"""The model contract and what variants are built from: configs, distributions, likelihoods, backbones."""
