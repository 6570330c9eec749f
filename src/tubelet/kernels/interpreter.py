"""Whether Triton's interpreter runs the kernels (``TRITON_INTERPRET=1``, set before the kernel
modules are imported, as they are decorated then).

Read once here: to ``torch.compile`` it is a constant, where Triton's own reading of the
environment cannot be traced (a graph break inside the kernels' autograd functions)."""

from triton import knobs

INTERPRETED = knobs.runtime.interpret
