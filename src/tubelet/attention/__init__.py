"""Attention schemes. Importing this package registers every scheme under its name.

Layout: ``grouping`` (which tokens attend to which), ``core`` (the one inner-attention contract),
``step`` (the residual step built from both), ``shift`` (channel shifts across the grid), and one
module per family of schemes: ``grouped`` (softmax), ``divided``, ``factorised_dot``, ``mixing``
(XViT, TSM-ViT) and ``linear``.
"""

from tubelet.attention import divided, factorised_dot, grouped, linear, mixing  # noqa: F401  (registration)
from tubelet.attention.registry import get_attention, list_attention, register_attention

__all__ = ["get_attention", "list_attention", "register_attention"]
