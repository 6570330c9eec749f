"""Model families. Importing this package registers every named configuration."""

from tubelet.models import lvt, mvit, timesformer, videomae, vivit, xvit  # noqa: F401  (registration)
from tubelet.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
