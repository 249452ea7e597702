"""Masked autoencoder with a ViT encoder, after facebookresearch/mae ``models_mae.py``.

One difference from the reference: the masking unit is decoupled from the ViT patch, as
in the paper's Sweep B. The image is tokenised in ``vit_patch`` x ``vit_patch`` patches,
but masking hides whole ``mask_unit`` x ``mask_unit`` blocks of tokens together. With
``mask_unit == vit_patch`` this is the standard MAE.

Shapes use N = batch, C = channels, H = W = image size, p = ViT patch, L = tokens
(H/p)**2, U = masking units (H/mask_unit)**2, k = tokens per unit side
(mask_unit/p), D = encoder width, Dd = decoder width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mae_hlvm.core.cells import unit_counts


def sincos_pos_embed(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding, (grid*grid, dim), row-major positions."""
    if dim % 4:
        raise ValueError(f"embedding width {dim} must be divisible by 4 for 2-D sin-cos positions")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij")
    parts = []
    for coord in (ys.reshape(-1), xs.reshape(-1)):
        angles = coord[:, None] * omega[None, :]
        parts += [torch.sin(angles), torch.cos(angles)]
    return torch.cat(parts, dim=1).float()


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (N, T, D) -> q, k, v each (N, heads, T, D/heads), views of one qkv output.

        Split, not ``reshape(..., 3, heads, ...).unbind``: the same views (same strides), but
        the backward pass joins the three gradients with one ``cat`` straight into the qkv
        layout, where ``unbind`` needs a ``stack`` and then a copy back out of the permuted
        layout (6 % of the ViT-B/16 step on a GPU, bench/results/gpu_h200_paper_2026-11-27.md).
        """
        n, t, d = x.shape
        h = self.num_heads
        q, k, v = (part.view(n, t, h, d // h).transpose(1, 2) for part in self.qkv(x).split(d, dim=-1))
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, T, D) -> (N, T, D)."""
        q, k, v = self._heads(x)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(x.shape))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Attention probabilities, (N, heads, T, T); SDPA does not expose them."""
        q, k, _ = self._heads(x)
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, T, D) -> (N, T, D)."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MaskedAutoencoder(nn.Module):
    """MAE whose masking unit may span several ViT patches."""

    def __init__(
        self,
        *,
        image_size: int,
        channels: int,
        vit_patch: int,
        mask_unit: int,
        mask_ratio: float,
        embed_dim: int,
        depth: int,
        num_heads: int,
        decoder_embed_dim: int,
        decoder_depth: int,
        decoder_num_heads: int,
        mlp_ratio: float,
        norm_pix_loss: bool,
    ) -> None:
        super().__init__()
        if image_size % vit_patch or mask_unit % vit_patch or image_size % mask_unit:
            raise ValueError(
                f"image_size={image_size}, vit_patch={vit_patch}, mask_unit={mask_unit}: "
                "the ViT patch must divide the masking unit, which must divide the image"
            )
        self.image_size, self.channels, self.vit_patch = image_size, channels, vit_patch
        self.mask_unit, self.mask_ratio, self.norm_pix_loss = mask_unit, mask_ratio, norm_pix_loss
        self.grid = image_size // vit_patch
        self.units_per_side = image_size // mask_unit
        self.tokens_per_unit_side = mask_unit // vit_patch
        self.n_visible_units, self.n_hidden_units = unit_counts(image_size, mask_unit, mask_ratio)
        if self.n_visible_units == 0 or self.n_hidden_units == 0:
            raise ValueError(
                f"mask_ratio={mask_ratio}, mask_unit={mask_unit}: keeps {self.n_visible_units} visible and "
                f"{self.n_hidden_units} hidden of {self.units_per_side ** 2} masking units; each needs at least one"
            )
        tokens_per_unit = self.tokens_per_unit_side**2
        self.n_visible = self.n_visible_units * tokens_per_unit
        self.n_hidden = self.n_hidden_units * tokens_per_unit
        patch_dim = vit_patch * vit_patch * channels

        self.patch_embed = nn.Linear(patch_dim, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer("pos_embed", sincos_pos_embed(embed_dim, self.grid)[None], persistent=False)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)

        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.register_buffer(
            "decoder_pos_embed", sincos_pos_embed(decoder_embed_dim, self.grid)[None], persistent=False
        )
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio) for _ in range(decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        # As in MAE: small normal tokens, xavier-uniform linears, unit LayerNorms.
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs: (N, C, H, W) -> (N, L, p*p*C), tokens row-major, pixels (p, p, C) inside."""
        n, c, _, _ = imgs.shape
        p, g = self.vit_patch, self.grid
        x = imgs.reshape(n, c, g, p, g, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(n, g * g, p * p * c)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, L, p*p*C) -> (N, C, H, W); inverse of :meth:`patchify`."""
        n = x.shape[0]
        p, g, c = self.vit_patch, self.grid, self.channels
        x = x.reshape(n, g, g, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(n, c, g * p, g * p)

    def unit_to_tokens(self, unit_values: torch.Tensor) -> torch.Tensor:
        """Spread one value per masking unit over its tokens: (N, U) -> (N, L)."""
        n = unit_values.shape[0]
        u, k = self.units_per_side, self.tokens_per_unit_side
        x = unit_values.reshape(n, u, 1, u, 1).expand(n, u, k, u, k)
        return x.reshape(n, self.grid * self.grid)

    def random_masking(
        self, x: torch.Tensor, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample random masking of whole masking units, by argsort of uniform noise.

        x: (N, L, D) -> x_visible (N, n_visible, D), mask (N, L) float32 with 1 = hidden,
        ids_restore (N, L) that undoes the visible-first token order. ``noise`` (N, U), on
        x's device, replaces the draw from the CPU ``generator`` (the CUDA training step
        draws a whole epoch's noise from the same stream at once).
        """
        n, length, d = x.shape
        if noise is None:
            noise = torch.rand(n, self.units_per_side**2, generator=generator, device="cpu").to(x.device)
        unit_rank = torch.argsort(torch.argsort(noise, dim=1), dim=1)
        unit_hidden = (unit_rank >= self.n_visible_units).float()
        token_hidden = self.unit_to_tokens(unit_hidden)
        # A stable sort on (hidden flag) puts visible tokens first, each block in raster order.
        ids_shuffle = torch.argsort(token_hidden, dim=1, stable=True)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, : self.n_visible]
        x_visible = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(n, self.n_visible, d))
        return x_visible, token_hidden, ids_restore

    def embed(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs: (N, C, H, W) -> tokens with positions (N, L, D), in the weights' dtype (a bf16
        copy of the model takes fp32 images; its loss target stays fp32)."""
        return self.patch_embed(self.patchify(imgs).to(self.patch_embed.weight.dtype)) + self.pos_embed

    def forward_encoder(
        self, imgs: torch.Tensor, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """imgs: (N, C, H, W) -> latent (N, 1 + n_visible, D), mask (N, L), ids_restore (N, L)."""
        x = self.embed(imgs)
        x, mask, ids_restore = self.random_masking(x, generator, noise)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """latent: (N, 1 + n_visible, D), ids_restore: (N, L) -> pred (N, L, p*p*C)."""
        x = self.decoder_embed(latent)
        n, length = ids_restore.shape
        mask_tokens = self.mask_token.expand(n, length - (x.shape[1] - 1), -1)
        x_ = torch.cat([x[:, 1:], mask_tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(n, length, x.shape[2]))
        x = torch.cat([x[:, :1], x_ + self.decoder_pos_embed], dim=1)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def target(self, imgs: torch.Tensor) -> torch.Tensor:
        """Reconstruction target, (N, L, p*p*C): pixels, or per-patch normalised pixels."""
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        return target

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over hidden tokens only. imgs (N, C, H, W), pred (N, L, P), mask (N, L)."""
        per_token = ((pred.float() - self.target(imgs).float()) ** 2).mean(dim=-1)
        return (per_token * mask).sum() / mask.sum()

    def forward(
        self, imgs: torch.Tensor, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """imgs (N, C, H, W), noise None or (N, U) -> loss (), pred (N, L, p*p*C), mask (N, L)."""
        latent, mask, ids_restore = self.forward_encoder(imgs, generator, noise)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, mask

    @torch.no_grad()
    def encode(self, imgs: torch.Tensor) -> torch.Tensor:
        """Features of UNmasked images: (N, C, H, W) -> (N, 1 + L, D), CLS first."""
        x = self.embed(imgs)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    @torch.no_grad()
    def encode_visible(self, imgs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Token features of the visible part only, as training feeds the encoder: imgs (N, C, H, W),
        keep (n_visible,) token indices in raster order -> (N, n_visible, D), CLS left out."""
        x = self.embed(imgs)[:, keep]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1:]

    @torch.no_grad()
    def last_attention(self, imgs: torch.Tensor) -> torch.Tensor:
        """Last encoder layer's attention on UNmasked images, (N, heads, 1 + L, 1 + L)."""
        x = self.embed(imgs)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks[:-1]:
            x = block(x)
        return self.blocks[-1].attn.weights(self.blocks[-1].norm1(x))


def build_model(model_params: dict, data_params: dict, mask_ratio: float, mask_unit: int) -> MaskedAutoencoder:
    """The cell's MAE from the ``model`` and ``data`` sections of params (plain dicts)."""
    return MaskedAutoencoder(
        image_size=data_params["image_size"],
        channels=data_params["channels"],
        mask_unit=mask_unit,
        mask_ratio=mask_ratio,
        **model_params,
    )
