"""Whether Triton's interpreter runs the kernels (``TRITON_INTERPRET=1``, set before the kernel
modules are imported, as they are decorated then).

Read once here, at import: the kernels' launch code (inside custom operators, which
``torch.compile`` calls without tracing) checks it to accept CPU tensors and to pick dot
operands the interpreter multiplies correctly."""

from triton import knobs

INTERPRETED = knobs.runtime.interpret
