"""Fused kernels behind the attention package (``tubelet.attention`` reaches them; nothing else
should): each ``<op>/`` keeps a plain PyTorch ``reference.py`` beside its ``triton.py``."""
