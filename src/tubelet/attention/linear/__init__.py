"""Linear video attention (LVT paper, seed 003): kernel feature maps, the inner linear attention
function, feature fixation, Linformer and Orthoformer cores, and the ``attention="linear"``
scheme that combines them with neighbourhood association (``tubelet.attention.shift``)."""

from tubelet.attention.linear.mixer import VARIANTS, LinearAttention

__all__ = ["VARIANTS", "LinearAttention"]
