"""Kernel tests run Triton's interpreter on machines without CUDA. Triton reads
``TRITON_INTERPRET`` when a kernel is decorated, so it is set here, in the root conftest that
pytest loads before it imports any test module (a test elsewhere may import the kernels first;
set in ``tests/kernels/`` it came too late in a full run)."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
