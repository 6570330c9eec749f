"""VideoMAE's fine-tuned classifier (Tong et al., NeurIPS 2022): a ViT with 2 x 16 x 16 tubelets,
joint attention, fixed sinusoidal positions, no class token, mean pooling with ``fc_norm``.

The released models have q and v biases but no k bias; a k bias has no effect on softmax
attention (it adds the same number to every logit of a query's row), so the fused ``qkv`` bias
holds zeros for k on conversion. LayerNorm eps is 1e-12 in the blocks as in Hugging Face's
configuration, and 1e-5 (LayerNorm's default) in ``fc_norm`` as in Hugging Face's classifier.
"""

from __future__ import annotations

from tubelet.models.registry import register_model
from tubelet.models.video_transformer import VideoTransformer

COMMON = dict(attention="joint", pos_embed="sincos", class_token=False, head="mean", tubelet_size=2, norm_eps=1e-12, head_norm_eps=1e-5)

register_model("videomae_base_p16t2_16x224", VideoTransformer, embed_dim=768, depth=12, num_heads=12, patch_size=16, num_frames=16, img_size=224, **COMMON)
register_model("videomae_large_p16t2_16x224", VideoTransformer, embed_dim=1024, depth=24, num_heads=16, patch_size=16, num_frames=16, img_size=224, **COMMON)
register_model("videomae_tiny_p8t2_8x32", VideoTransformer, embed_dim=64, depth=2, num_heads=4, patch_size=8, num_frames=8, img_size=32, **COMMON)
