"""tubelet: video transformers in PyTorch.

    import tubelet
    model = tubelet.create_model("timesformer_divided_base_p16_8x224", num_classes=10)
    logits = model(video)  # video: float [B, C, T, H, W]
"""

from tubelet.models.registry import create_model, list_models
from tubelet.models.serialization import load_model, save_model

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "load_model", "save_model"]
