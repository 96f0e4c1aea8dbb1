"""The zoo: pretrained tags, the registry of names, and the factory that builds and loads models by name."""
