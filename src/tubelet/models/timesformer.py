"""TimeSformer (Bertasius, Wang and Torresani, ICML 2021): every attention scheme of its Table 1.

Names: ``timesformer_<scheme>_<size>_p<patch>_<frames>x<pixels>``. ``space`` is the paper's
space-only model (frames classified independently, then averaged); the others share the
``VideoTransformer`` backbone with a class token and separate spatial and temporal embeddings.
The paper's divided model comes in three inputs: 8x224 (TimeSformer), 16x448 (HR), 96x224 (L).
"""

from __future__ import annotations

from tubelet.models.factorised_encoder import FactorisedEncoder
from tubelet.models.registry import register_model
from tubelet.models.video_transformer import VideoTransformer

BASE = dict(embed_dim=768, depth=12, num_heads=12, patch_size=16)
TINY = dict(embed_dim=64, depth=2, num_heads=4, patch_size=8, num_frames=8, img_size=32)

for frames, pixels in ((8, 224), (16, 448), (96, 224)):
    register_model(
        f"timesformer_divided_base_p16_{frames}x{pixels}", VideoTransformer,
        attention="divided", num_frames=frames, img_size=pixels, **BASE,
    )
for scheme in ("joint", "local_global", "axial"):
    register_model(
        f"timesformer_{scheme}_base_p16_8x224", VideoTransformer,
        attention=scheme, num_frames=8, img_size=224, **BASE,
    )
for scheme in ("divided", "joint", "local_global", "axial"):
    register_model(f"timesformer_{scheme}_tiny_p8_8x32", VideoTransformer, attention=scheme, **TINY)
register_model(
    "timesformer_space_base_p16_8x224", FactorisedEncoder,
    temporal_depth=0, num_frames=8, img_size=224, **BASE,
)
register_model("timesformer_space_tiny_p8_8x32", FactorisedEncoder, temporal_depth=0, **TINY)
