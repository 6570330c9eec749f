"""Whether Triton's interpreter runs the kernels (``TRITON_INTERPRET=1``, set before the kernel
modules are imported, as they are decorated then).

Read once here: to ``torch.compile`` it is a constant, where Triton's own reading of the
environment cannot be traced (a graph break where the launch code is traced: the Eq. 3 kernel's
autograd function; the fused step's custom operators are not traced)."""

from triton import knobs

INTERPRETED = knobs.runtime.interpret
