"""Attention schemes. Importing this package registers every scheme under its name."""

from tubelet.attention import divided, factorised_dot, grouped, linear  # noqa: F401  (registration)
from tubelet.attention.registry import get_attention, list_attention, register_attention

__all__ = ["get_attention", "list_attention", "register_attention"]
