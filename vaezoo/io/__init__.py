"""Files on disk: atomic writes, safetensors with checks, model folders, cards, figures and the Hub.

This layer moves dicts, tensors and paths; it never builds or holds a model (vaezoo.zoo does that).
"""
