import pytest
import torch

from tubelet.layers.shape import split_prefix


@pytest.mark.parametrize("prefix", [0, 1, 3])
def test_split_prefix_gives_the_two_slices_and_their_gradients(prefix):
    """The two pieces are ``x[:, :p]`` and ``x[:, p:]``; the gradient of a piece that is not used
    (the prefix of the temporal queries) is zero, the other piece's is its own."""
    x = torch.randn(2, prefix + 5, 4, dtype=torch.float64, requires_grad=True)
    head, rest = split_prefix(x, prefix)
    assert torch.equal(head, x[:, :prefix]) and torch.equal(rest, x[:, prefix:])
    weights = torch.randn_like(rest)
    (grad,) = torch.autograd.grad((rest * weights).sum(), x)
    assert torch.equal(grad[:, prefix:], weights) and not grad[:, :prefix].any()
    q = torch.randn(2, 3, prefix + 5, 4, requires_grad=True)
    assert torch.equal(split_prefix(q, prefix, dim=2)[1], q[:, :, prefix:])
