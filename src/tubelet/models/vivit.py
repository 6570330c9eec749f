"""ViViT (Arnab et al., ICCV 2021): models 1-4 with tubelet embedding.

- model 1, ``vivit_joint_*``: joint space-time attention, one positional table, class token;
- model 2, ``vivit_factorised_encoder_*``: a spatial encoder per tubelet slice, then a temporal
  encoder over the slices' class tokens (``FactorisedEncoder``; 4 temporal layers as in the paper);
- model 3, ``vivit_factorised_self_*``: spatial then temporal self-attention in each block;
- model 4, ``vivit_factorised_dot_*``: half the heads spatial, half temporal.
Models 3 and 4 pool by averaging the tokens, as scenic's factorised models do. Tubelets are
2 x 16 x 16 ("p16t2"); the paper's Kinetics inputs are 32 frames at 224 px.
"""

from __future__ import annotations

from tubelet.models.factorised_encoder import FactorisedEncoder
from tubelet.models.registry import register_model
from tubelet.models.video_transformer import VideoTransformer

SIZES = {
    "base": dict(embed_dim=768, depth=12, num_heads=12, patch_size=16, tubelet_size=2, num_frames=32, img_size=224),
    "large": dict(embed_dim=1024, depth=24, num_heads=16, patch_size=16, tubelet_size=2, num_frames=32, img_size=224),
    "tiny": dict(embed_dim=64, depth=2, num_heads=4, patch_size=8, tubelet_size=2, num_frames=8, img_size=32),
}
SUFFIXES = {"base": "base_p16t2_32x224", "large": "large_p16t2_32x224", "tiny": "tiny_p8t2_8x32"}
# The ViViT checkpoints released with Hugging Face use the tanh GELU; the paper's JAX code uses exact GELU.
MODELS = {
    "joint": (VideoTransformer, dict(attention="joint", pos_embed="joint")),
    "factorised_encoder": (FactorisedEncoder, dict(temporal_depth=4, drop_path_ramp="per_encoder")),
    "factorised_self": (VideoTransformer, dict(attention="factorised_self", pos_embed="joint", class_token=False, head="mean")),
    "factorised_dot": (VideoTransformer, dict(attention="factorised_dot", pos_embed="joint", class_token=False, head="mean")),
}

for model, (cls, args) in MODELS.items():
    for size, suffix in SUFFIXES.items():
        register_model(f"vivit_{model}_{suffix}", cls, **{**args, **SIZES[size]})
