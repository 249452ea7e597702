"""A straightforward MAE of the facebookresearch/mae shape, the yardstick for bench_train.

Written for this benchmark (not copied): token-level masking by argsort of noise, a
plain attention with an explicit softmax (as timm's Block did before SDPA), learned
positional embeddings. Masking units equal the ViT patch, as in the original.
"""

from __future__ import annotations

import torch
from torch import nn


class PlainAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(n, t, d))


class PlainBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.n1, self.attn, self.n2 = nn.LayerNorm(dim), PlainAttention(dim, heads), nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.n1(x))
        return x + self.mlp(self.n2(x))


class PlainMAE(nn.Module):
    def __init__(self, image_size: int, channels: int, patch: int, dim: int, depth: int, heads: int,
                 dec_dim: int, dec_depth: int, dec_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.p, self.c, self.g = patch, channels, image_size // patch
        L, pd = self.g**2, patch * patch * channels
        self.embed, self.cls = nn.Linear(pd, dim), nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, L + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(PlainBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm, self.dec_embed = nn.LayerNorm(dim), nn.Linear(dim, dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
        self.dec_pos = nn.Parameter(torch.randn(1, L + 1, dec_dim) * 0.02)
        self.dec_blocks = nn.ModuleList(PlainBlock(dec_dim, dec_heads, mlp_ratio) for _ in range(dec_depth))
        self.dec_norm, self.pred = nn.LayerNorm(dec_dim), nn.Linear(dec_dim, pd)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        n, p, g, c = imgs.shape[0], self.p, self.g, self.c
        return torch.einsum("nchpwq->nhwpqc", imgs.reshape(n, c, g, p, g, p)).reshape(n, g * g, p * p * c)

    def forward(self, imgs: torch.Tensor, mask_ratio: float) -> torch.Tensor:
        x = self.embed(self.patchify(imgs)) + self.pos[:, 1:]
        n, L, d = x.shape
        keep = int(L * (1 - mask_ratio))
        ids_shuffle = torch.argsort(torch.rand(n, L), dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        x = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, d))
        mask = torch.ones(n, L)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        x = torch.cat([(self.cls + self.pos[:, :1]).expand(n, -1, -1), x], 1)
        for b in self.blocks:
            x = b(x)
        x = self.dec_embed(self.norm(x))
        y = torch.cat([x[:, 1:], self.mask_token.expand(n, L - keep, -1)], 1)
        y = torch.gather(y, 1, ids_restore[..., None].expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1], y], 1) + self.dec_pos
        for b in self.dec_blocks:
            x = b(x)
        pred = self.pred(self.dec_norm(x))[:, 1:]
        loss = ((pred - self.patchify(imgs)) ** 2).mean(-1)
        return (loss * mask).sum() / mask.sum()
