"""Blocked Euclidean distances in float32."""

from __future__ import annotations

import torch

# Rows per block: bounds the temporary of the Gram product to about 64 MiB of float32.
_BLOCK_ELEMENTS = 1 << 24


def pairwise_distances(X: torch.Tensor, Y: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean distances between the rows of ``X`` and ``Y`` (``X`` itself when None).

    Uses the Gram identity ||a - b||^2 = ||a||^2 + ||b||^2 - 2 <a, b> in row blocks,
    clamped at zero before the square root. Both sides are first centred on the mean of
    ``X`` (distances do not change under translation, and centring removes most of the
    cancellation error of the identity). With ``Y`` None the diagonal is exactly zero.

    Parameters
    ----------
    X : Tensor, shape (n, d)
    Y : Tensor, shape (m, d), optional

    Returns
    -------
    Tensor, shape (n, m), float32, on the device of ``X``.
    """
    X = X.to(torch.float32)
    center = X.mean(dim=0, keepdim=True)
    A = X - center
    B = A if Y is None else Y.to(device=X.device, dtype=torch.float32) - center
    a_sq = (A * A).sum(dim=1)
    b_sq = a_sq if Y is None else (B * B).sum(dim=1)
    out = torch.empty((A.shape[0], B.shape[0]), dtype=torch.float32, device=X.device)
    rows = max(1, _BLOCK_ELEMENTS // max(1, B.shape[0]))
    for start in range(0, A.shape[0], rows):
        stop = min(start + rows, A.shape[0])
        block = out[start:stop]
        torch.mm(A[start:stop], B.T, out=block)
        block.mul_(-2.0).add_(a_sq[start:stop, None]).add_(b_sq[None, :])
        block.clamp_(min=0.0).sqrt_()
    if Y is None:
        out.fill_diagonal_(0.0)
    return out
