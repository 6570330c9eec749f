"""Kernel tests run Triton's interpreter on machines without CUDA. Triton reads
``TRITON_INTERPRET`` when a kernel is decorated, so it is set here, before any test module
imports the kernels."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
