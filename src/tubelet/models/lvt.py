"""Linear video transformer with feature fixation and neighbourhood association (seed 003, "Linear
Video Transformer with Feature Fixation"): the ``VideoTransformer`` backbone with
``attention="linear"`` (``tubelet.attention.linear``).

The seed's default model (Sec. 5.1): ViT, embedding 512, patch 16, 12 layers of 8 heads,
factorised space-then-time ReLU linear attention with cooperative Q-K-V feature fixation (shared
ratio) and temporal + spatial shifts of K and V, 16 frames at 224 px. Variants (Table 7):
S = 8x224, H = 32x224, HR = 16x336. As in the LVT code there is no class token; the classifier
reads the mean of the patch tokens. Every ablation of Tables 3-6 and 9 is an
``attention_options`` override, e.g. ``attention_options={"variant": "performer"}``.

Size against Table 1 (52.2M parameters, 257.8 "GFLOPs" for 16x224, which are
multiply-accumulates) and Table 7 (S 129.1, H 530.2, HR 573.3): ``lvt_base_p16_16x224`` has
51.3M parameters with SSv2's 174-class head (51.5M with the default 400 classes) and 171 GMACs;
S, H and HR cost 86, 343 and 386 GMACs (``tubelet models`` counts them). The differences come
from the LVT code's backbone, not from the method:
- its patch embedding overlaps (kernel 16, stride 14, padding 8: 17 x 17 = 289 tokens per frame
  at 224 px against 196 here), which multiplies every cost by about 289/196; the same model at
  272 px (17 x 17 tokens) costs 253 GMACs, within 2% of 257.8;
- its MLP has a 3x3 depth-wise convolution (+0.25M parameters) and its configs learn separate
  fixation ratios for Q and K (``SHARE_GATE: False``, +0.3M), which brings 51.3M to ~51.9M;
  tubelet keeps the plain ViT MLP, the shared ratio that Table 4 finds best, separate space and
  time positional tables and mean pooling.
Each of those is an option of the same models (``patch_stride``, ``patch_norm``, ``mlp="dwconv"``,
``pos_embed="temporal"``, ``head="norm_mean_mlp"``, ``attention_options`` ``groupings``, time
first, and ``fixation_shared``); ``tubelet.convert.lvt.official_arguments`` collects them, and the
converter of the official checkpoints builds them.
"""

from __future__ import annotations

from tubelet.models.registry import register_model
from tubelet.models.video_transformer import VideoTransformer

BACKBONE = dict(attention="linear", class_token=False, head="mean", pos_embed="separate")
BASE = dict(embed_dim=512, depth=12, num_heads=8, patch_size=16)
TINY = dict(embed_dim=64, depth=2, num_heads=4, patch_size=8)

for name, size, frames, pixels in (
    ("lvt_small_p16_8x224", BASE, 8, 224),  # S
    ("lvt_base_p16_16x224", BASE, 16, 224),  # default
    ("lvt_base_p16_32x224", BASE, 32, 224),  # H
    ("lvt_base_p16_16x336", BASE, 16, 336),  # HR
    ("lvt_tiny_p8_8x32", TINY, 8, 32),  # for tests and the CPU demo
):
    register_model(name, VideoTransformer, num_frames=frames, img_size=pixels, **BACKBONE, **size)
