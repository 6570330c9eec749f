"""Fused kernels behind the attention package and the layers (``tubelet.attention`` and
``tubelet.layers`` reach them; nothing else should): each ``<op>/`` keeps a plain PyTorch
``reference.py`` beside its ``triton.py``."""
