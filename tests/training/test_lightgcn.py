"""LightGCN's propagation and loss against a dense reference: values and gradients.

The training path is written for speed (a running sum of layers, addmm into uninitialized memory, one
gather for positives and negatives); these pin it to the textbook formulas. Float32 sums taken in a
different order differ in the last bits, hence rtol 1e-5.
"""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from peel.models.graph import normalized_adjacency, propagate
from peel.models.lightgcn import LightGCN

N_USERS, N_ITEMS, BLOCKS, BLOCK_DIM, LAYERS = 12, 15, 4, 3, 3


def _graph(seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = rng.random((N_USERS, N_ITEMS)) < 0.3
    dense[np.arange(N_USERS), rng.integers(N_ITEMS, size=N_USERS)] = True
    return sp.csr_matrix(dense.astype(np.float32))


def _dense_adjacency(train: sp.csr_matrix) -> torch.Tensor:
    r = train.toarray()
    a = np.block([[np.zeros((N_USERS, N_USERS)), r], [r.T, np.zeros((N_ITEMS, N_ITEMS))]])
    degree = a.sum(1)
    inv = np.where(degree > 0, 1 / np.sqrt(np.maximum(degree, 1e-12)), 0)
    return torch.tensor(inv[:, None] * a * inv[None, :], dtype=torch.float32)


@pytest.mark.parametrize("combination", ["mean", "last"])
def test_propagation_and_its_gradient_equal_the_dense_formula(combination):
    train = _graph()
    dense = _dense_adjacency(train)
    torch.manual_seed(0)
    ego = torch.randn(N_USERS + N_ITEMS, 8, requires_grad=True)
    weight = torch.randn(N_USERS + N_ITEMS, 8)
    out = propagate(normalized_adjacency(train), ego, LAYERS, combination)
    layers = [ego]
    for _ in range(LAYERS):
        layers.append(dense @ layers[-1])
    expected = layers[-1] if combination == "last" else torch.stack(layers).mean(0)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad((out * weight).sum(), ego)
    (expected_grad,) = torch.autograd.grad((expected * weight).sum(), ego)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nested", [(), (1, 2, 4)])
def test_loss_and_gradients_equal_the_dense_reference(nested):
    train = _graph(1)
    torch.manual_seed(1)
    model = LightGCN(N_USERS, N_ITEMS, n_blocks=BLOCKS, block_dim=BLOCK_DIM, layers=LAYERS,
                     adjacency=normalized_adjacency(train))
    users = torch.randint(0, N_USERS, (40,))
    positives = torch.randint(0, N_ITEMS, (40,))
    negatives = torch.cat([positives[:10], torch.randint(0, N_ITEMS, (30,))])  # an item on both sides too
    l2 = (0.3, 0.1, 0.01) if nested else 0.05
    loss = model.loss(users, positives, negatives, l2=l2, lambda_div=0.0, nested=nested)
    grads = torch.autograd.grad(loss, [model.user_embedding, model.item_embedding])

    dense = _dense_adjacency(train)
    ego = torch.cat([model.user_embedding, model.item_embedding])
    layers = [ego]
    for _ in range(LAYERS):
        layers.append(dense @ layers[-1])
    final = torch.stack(layers).mean(0)
    u, items = final[:N_USERS][users], final[N_USERS:]

    def objective(blocks: int, weight: float) -> torch.Tensor:
        d = blocks * BLOCK_DIM
        margin = (u[:, :d] * items[positives, :d]).sum(1) - (u[:, :d] * items[negatives, :d]).sum(1)
        rows = torch.cat([model.user_embedding[users, :d], model.item_embedding[positives, :d],
                          model.item_embedding[negatives, :d]])
        return -F.logsigmoid(margin).mean() + weight * rows.pow(2).sum() / (2 * len(users))

    expected = (sum(objective(b, w) for b, w in zip(nested, l2, strict=True)) / len(nested) if nested
                else objective(BLOCKS, l2))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    expected_grads = torch.autograd.grad(expected, [model.user_embedding, model.item_embedding])
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_the_sparse_product_ignores_whatever_its_uninitialized_output_held():
    # _spmm writes A @ x into torch.empty memory with beta = 0; a kernel that scaled the old contents by
    # beta instead of ignoring them would turn a NaN left there by an earlier array into NaN scores
    from peel.models.graph import _spmm

    train = _graph(2)
    adjacency = normalized_adjacency(train)
    x = torch.randn(N_USERS + N_ITEMS, 8)
    expected = _dense_adjacency(train) @ x
    for _ in range(5):  # freed NaN blocks of exactly the output's size: the allocator hands them back
        poison = torch.full((N_USERS + N_ITEMS, 8), float("nan"))
        del poison
        torch.testing.assert_close(_spmm(adjacency, x), expected, rtol=1e-5, atol=1e-6)
