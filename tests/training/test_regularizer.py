import pytest
import torch

from peel.models.regularizers import diversity, diversity_pairwise


@pytest.mark.parametrize(("n_blocks", "block_dim"), [(2, 1), (4, 3), (16, 8), (5, 7)])
def test_closed_form_equals_pairwise_sum(n_blocks, block_dim):
    blocks = torch.randn(11, n_blocks, block_dim, dtype=torch.float64)
    torch.testing.assert_close(diversity(blocks), diversity_pairwise(blocks), rtol=1e-10, atol=1e-10)


def test_bounded_and_extremes():
    same = torch.ones(3, 4, 2)
    assert float(diversity(same)) == pytest.approx(0.0, abs=1e-6)  # identical blocks: no diversity
    opposite = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])
    assert float(diversity(opposite)) == pytest.approx(4.0)  # N^2 - ||sum||^2 = 4 - 0
    scaled = torch.randn(5, 4, 3)
    torch.testing.assert_close(diversity(scaled), diversity(scaled * 100))  # scale-free: bounded


def test_gradient_flows():
    blocks = torch.randn(4, 3, 2, requires_grad=True)
    diversity(blocks).backward()
    assert blocks.grad is not None and torch.isfinite(blocks.grad).all() and blocks.grad.abs().sum() > 0
