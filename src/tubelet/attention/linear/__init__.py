"""Linear video attention (LVT paper, seed 003): kernel feature maps, the inner linear attention
function, feature fixation, neighbourhood association, Linformer and Orthoformer, and the
``attention="linear"`` scheme that combines them."""

from tubelet.attention.linear.mixer import VARIANTS, LinearAttention, LinearAttentionLayer

__all__ = ["VARIANTS", "LinearAttention", "LinearAttentionLayer"]
