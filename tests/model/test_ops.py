import torch

from hilo_export.model import token_gather, token_scatter


def make(batch=2, n=10, k=4, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(batch, n, c, generator=g, dtype=torch.float64)
    indices = torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(batch)])
    updates = torch.randn(batch, k, c, generator=g, dtype=torch.float64)
    return data, indices, updates


def test_gather_and_scatter_match_plain_indexing():
    data, indices, updates = make()
    gathered = token_gather(data, indices)
    scattered = token_scatter(data, indices, updates)
    for b in range(data.shape[0]):
        assert torch.equal(gathered[b], data[b, indices[b]])
        expected = data[b].clone()
        expected[indices[b]] = updates[b]
        assert torch.equal(scattered[b], expected)
    assert not torch.equal(scattered, data), "scatter returns a new tensor and leaves base alone"


def test_custom_op_registrations():
    data, indices, updates = make()
    torch.library.opcheck(token_gather, (data, indices))
    torch.library.opcheck(token_scatter, (data, indices, updates))


def test_gradients():
    data, indices, updates = make()
    data.requires_grad_(True)
    updates.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda d: token_gather(d, indices), (data,))
    assert torch.autograd.gradcheck(lambda d, u: token_scatter(d, indices, u), (data, updates))
