# SPDX-License-Identifier: Apache-2.0
"""Block-wise local self-attention with a halo (HaloNet), as HaloAE uses it.

Paper: Vaswani et al., "Scaling Local Self-Attention for Parameter Efficient Visual Backbones"
(CVPR 2021), eq. 2-3; used by HaloAE (Mathian et al., 2022) in every encoder/decoder bottleneck.

The map is cut into non-overlapping ``block x block`` query blocks; each block attends to the
``(block + 2 * halo)**2`` window around it. Logits are content-content (q.k) plus content-geometry
(q.r) terms, with separable relative-position tables for rows and columns indexed exactly as
lucidrains/halonet-pytorch and timm do (query x in block coordinates, key j in window coordinates,
table row ``j - x + window - 1``), so weights port between the three.

Padded keys: this layer follows the *masked* HaloNet convention (lucidrains after the fix of
issue #4): keys that fall outside the feature map (the halo around the border and the padding
added when a side is not a multiple of the block) are excluded from the softmax. The HaloNet
paper and timm instead let zero-padded keys take part with only their positional logit.
Maps whose sides are not multiples of the block are padded at the bottom/right, the padded
queries are computed and cropped away.

Projections (q, k, v) are 1x1 convolutions applied once to the whole map, *before* blocking; the
halo windows are then strided views (``Tensor.unfold``), never re-projected per window. On CUDA
the attention runs through ``F.scaled_dot_product_attention``, with the positional logits and the
padding mask folded into augmented query/key vectors (see ``_augment``) so that the fused kernels
need no (queries x keys) bias tensor. On CPU a small autograd function computes the same thing
flash-style, in cache-sized chunks with a hand-written backward (``_BlockAttention``).

``kind="legacy"`` reproduces the published HaloAE code (a copy of halonet-pytorch 0.0.4) exactly:
its mask is inverted (``masked_fill_(valid, -max)``), so interior blocks output the mean of V over
the window, border blocks only the output bias, and q, k and the position tables receive exactly
zero gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Large finite negative logit for masked keys: exp() underflows to 0 in fp32/bf16, and unlike -inf
# it keeps the fused kernels' backward free of 0 * inf.
_MASKED_LOGIT = -1.0e4


# Bytes of one chunk's (queries x keys) logits on the CPU path: small enough to stay in the L2/L3
# caches while the logits are built, normalised and multiplied (measured on a 4 MiB-L2 Xeon:
# 2-8 MiB chunks run the whole core 2.2x faster than one pass over the full matrix).
_CHUNK_BYTES = 6 * 2**20
# Floor of the centred logits before exp() on the CPU path. exp() of anything below about -88
# underflows through a slow path (measured 80x slower per element than in range), and the masked
# keys' logits all lie there. A floor near that limit is no cure: weights of e^-80 make denormal
# products in the backward (the cpu preset's training step measured 1.22 s at -80, 0.92 s with no
# floor, 0.78 s at -60 and at -40). At -40 a masked key weighs e^-40 ~ 4e-18 instead of 0, some
# 1e-10 of float32's resolution of the other weights.
_EXP_FLOOR = -40.0


class _BlockAttention(torch.autograd.Function):
    """``softmax(q k^T + rows[.., iy] + cols[.., ix]) v`` with a hand-written backward.

    The CPU path, flash-attention style: the (queries x keys) logits are built, normalised and
    consumed one cache-sized chunk of ``G`` at a time, in one reused buffer, never as a whole.
    Forward saves only the log-sum-exp per query; backward recomputes each chunk's probabilities
    and derives dS from them; the positional gradients are row/column sums of dS.

    Shapes: q (G, N, Q, d) pre-scaled, k and v (G, N, K, d), rows and cols (G, N, Q, win)
    pre-scaled, K = win * win (key = window row iy, column ix). The padding mask is separable
    (a key is valid iff its row and its column are), so the layer folds it into rows and cols as
    a large negative on invalid rows/columns: one pass over the logits fewer. Any strides work;
    the layer passes q, k, v as transposed views of channel-first (G, N, d, Q|K) storage, which is
    what its window extraction and map reshapes produce without transposing copies, and every
    product below reads and writes that layout directly: the output and the gradients of q, k, v
    are transposed views of channel-first tensors too.
    """

    @staticmethod
    def _chunk(q: torch.Tensor, keys: int) -> int:
        _, N, Q, _ = q.shape
        return max(1, _CHUNK_BYTES // (N * Q * keys * q.element_size()))

    @staticmethod
    def _logits(s, qT, kT, rows, cols):
        """Chunk logits into ``s`` (g, N, Q, K): the positional terms written first, then q.k
        accumulated onto them by the matmul itself (two passes over the chunk, not four)."""
        g, N, Q, K = s.shape
        win = rows.shape[-1]
        torch.add(rows.unsqueeze(-1), cols.unsqueeze(-2), out=s.view(g, N, Q, win, win))
        s.view(g * N, Q, K).baddbmm_(qT.transpose(-1, -2).reshape(g * N, Q, -1), kT.reshape(g * N, -1, K))
        return s

    @staticmethod
    def forward(ctx, q, k, v, rows, cols):
        G, N, Q, d = q.shape
        K = k.shape[2]
        qT, kT, vT = (t.transpose(-1, -2) for t in (q, k, v))  # (G, N, d, Q|K)
        chunk = _BlockAttention._chunk(q, K)
        outT = q.new_empty(G, N, v.shape[-1], Q)
        lse = q.new_empty(G, N, Q, 1)  # log-sum-exp of each query's logits
        buf = q.new_empty(min(chunk, G), N, Q, K)
        for a in range(0, G, chunk):
            z = slice(a, min(G, a + chunk))
            s = _BlockAttention._logits(buf[: z.stop - a], qT[z], kT[z], rows[z], cols[z])
            m = s.amax(-1, keepdim=True)
            total = s.sub_(m).clamp_(min=_EXP_FLOOR).exp_().sum(-1, keepdim=True)
            torch.matmul(vT[z], s.div_(total).transpose(-1, -2), out=outT[z])  # (d, K) @ (K, Q)
            torch.add(m, total.log_(), out=lse[z])
        ctx.save_for_backward(q, k, v, rows, cols, outT, lse)
        return outT.transpose(-1, -2)

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, rows, cols, outT, lse = ctx.saved_tensors
        G, N, Q, _ = q.shape
        K, win = k.shape[2], rows.shape[-1]
        qT, kT, vT = (t.transpose(-1, -2) for t in (q, k, v))
        chunk = _BlockAttention._chunk(q, K)
        d_outT = d_out.transpose(-1, -2).contiguous()  # (G, N, d, Q); a no-op from the layer
        delta = (d_outT * outT).sum(-2).unsqueeze(-1)  # rowsum(dP * P) = dO . O, (G, N, Q, 1)
        d_qT, d_kT, d_vT = (t.new_empty(t.shape) for t in (qT, kT, vT))
        d_rows, d_cols = torch.empty_like(rows), torch.empty_like(cols)
        p_buf = q.new_empty(min(chunk, G), N, Q, K)
        ds_buf = torch.empty_like(p_buf)
        for a in range(0, G, chunk):
            z = slice(a, min(G, a + chunk))
            n = z.stop - a
            p = _BlockAttention._logits(p_buf[:n], qT[z], kT[z], rows[z], cols[z])
            p = p.sub_(lse[z]).clamp_(min=_EXP_FLOOR).exp_()
            torch.matmul(d_outT[z], p, out=d_vT[z])  # (d, Q) @ (Q, K)
            ds = torch.matmul(d_outT[z].transpose(-1, -2), vT[z], out=ds_buf[:n])  # dP, then dS
            ds.sub_(delta[z]).mul_(p)
            grid = ds.view(n, N, Q, win, win)
            torch.sum(grid, -1, out=d_rows[z])
            torch.sum(grid, -2, out=d_cols[z])
            torch.matmul(kT[z], ds.transpose(-1, -2), out=d_qT[z])  # (d, K) @ (K, Q)
            torch.matmul(qT[z], ds, out=d_kT[z])  # (d, Q) @ (Q, K)
        return d_qT.transpose(-1, -2), d_kT.transpose(-1, -2), d_vT.transpose(-1, -2), d_rows, d_cols


class _HaloWindows(torch.autograd.Function):
    """The halo windows of a map, channel-first: (B, C, H, W) -> (B, n_h, n_w, C, win, win).

    Forward zero-pads by ``halo`` (plus ``extra`` rows/columns at the bottom/right) and copies the
    overlapping ``win x win`` windows at stride ``block`` out of a strided view, rows of the window
    staying contiguous. Backward adds each window's gradient back onto the padded map, looping over
    whichever is fewer, windows or window offsets, instead of the generic (much slower on CPU)
    ``unfold`` backward, then crops the padding.
    """

    @staticmethod
    def forward(ctx, x, block, halo, extra_h, extra_w):
        B, C, H, W = x.shape
        win = block + 2 * halo
        padded = F.pad(x, (halo, halo + extra_w, halo, halo + extra_h))
        view = padded.unfold(2, win, block).unfold(3, win, block)  # B, C, n_h, n_w, win, win
        ctx.geometry = (B, C, H, W, block, halo, padded.shape[-2], padded.shape[-1])
        return view.permute(0, 2, 3, 1, 4, 5).contiguous()

    @staticmethod
    def backward(ctx, grad):
        B, C, H, W, block, halo, Hp, Wp = ctx.geometry
        _, n_h, n_w, _, win, _ = grad.shape
        d_padded = grad.new_zeros(B, C, Hp, Wp)
        if n_h * n_w <= win * win:
            for i in range(n_h):
                for j in range(n_w):
                    # add_ on the view: ``view += g`` would also copy the sum back onto itself
                    d_padded[:, :, i * block : i * block + win, j * block : j * block + win].add_(grad[:, i, j])
        else:  # many small windows: one strided add per offset inside the window
            by_offset = grad.permute(0, 3, 4, 5, 1, 2)  # B, C, win, win, n_h, n_w
            for dy in range(win):
                for dx in range(win):
                    target = d_padded[:, :, dy : dy + (n_h - 1) * block + 1 : block, dx : dx + (n_w - 1) * block + 1 : block]
                    target += by_offset[:, :, dy, dx]
        return d_padded[:, :, halo : halo + H, halo : halo + W], None, None, None, None


# Under torch.compile (train.compile) both hand-written kernels run as they are, between the
# compiled graphs: they already do their work in place and in cache-sized chunks, and with them
# traced, compiling the cpu preset's step had not finished after 15 minutes (inductor generating
# ever deeper nested masked loads). Eager calls pay a few microseconds for the wrapper.
_halo_windows = torch.compiler.disable(_HaloWindows.apply)
_block_attention = torch.compiler.disable(_BlockAttention.apply)


class HaloAttention(nn.Module):
    """Halo (block-local) multi-head self-attention on a ``(B, C, H, W)`` map.

    Args:
        dim (int): channels of the input and output map.
        block_size (int): side of each query block, >= 1. (default: 12)
        halo_size (int): width of the band of extra keys around each block, >= 0. (default: 2)
        heads (int): attention heads. (default: 8)
        dim_head (int): channels per head; the inner width is ``heads * dim_head``. (default: 16)
        kind (str): ``"halo"`` (working attention) or ``"legacy"`` (the published HaloAE code,
            inverted mask). (default: "halo")
    """

    def __init__(
        self,
        dim: int,
        block_size: int = 12,
        halo_size: int = 2,
        heads: int = 8,
        dim_head: int = 16,
        kind: str = "halo",
    ) -> None:
        super().__init__()
        if dim < 1 or heads < 1 or dim_head < 1:
            raise ValueError(f"dim, heads and dim_head must be >= 1, got {dim}, {heads}, {dim_head}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        if halo_size < 0:
            raise ValueError(f"halo_size must be >= 0, got {halo_size}")
        if kind not in ("halo", "legacy"):
            raise ValueError(f"kind must be 'halo' or 'legacy', got {kind!r}")
        self.dim = dim
        self.block_size = block_size
        self.halo_size = halo_size
        self.heads = heads
        self.dim_head = dim_head
        self.kind = kind
        self.win_size = block_size + 2 * halo_size  # neighbourhood window side
        self.scale = dim_head**-0.5
        inner = heads * dim_head
        self.to_q = nn.Conv2d(dim, inner, 1, bias=False)
        self.to_kv = nn.Conv2d(dim, 2 * inner, 1, bias=False)
        self.to_out = nn.Conv2d(inner, dim, 1)
        self.rel_height = nn.Parameter(torch.empty(2 * self.win_size - 1, dim_head))
        self.rel_width = nn.Parameter(torch.empty(2 * self.win_size - 1, dim_head))
        # rel_index[x, j] = row of the relative table for query x (block coords), key j (window coords)
        x = torch.arange(block_size)[:, None]
        j = torch.arange(self.win_size)[None, :]
        self.register_buffer("rel_index", j - x + self.win_size - 1, persistent=False)
        self._mask_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # as halonet-pytorch / the HaloAE code: tables ~ N(0, 1/dim_head); the model-level init
        # (kaiming normal, zero bias) then overwrites the projections, as the original does.
        nn.init.normal_(self.rel_height, std=self.scale)
        nn.init.normal_(self.rel_width, std=self.scale)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, block_size={self.block_size}, halo_size={self.halo_size}, "
            f"heads={self.heads}, dim_head={self.dim_head}, kind={self.kind!r}"
        )

    # ---------------------------------------------------------------- geometry
    def _key_valid(self, H: int, W: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Which keys lie inside the original H x W map, per block: ``(valid, row_ok, col_ok)``,
        ``valid`` (num_blocks, win*win) bool, and its separable factors ``row_ok`` and ``col_ok``
        (num_blocks, win): a key is valid iff its window row and its window column are."""
        key = (H, W, str(device))
        cached = self._mask_cache.get(key)
        if cached is None:
            b, h, win = self.block_size, self.halo_size, self.win_size
            n_h, n_w = -(-H // b), -(-W // b)
            rows = torch.arange(n_h, device=device)[:, None] * b - h + torch.arange(win, device=device)
            cols = torch.arange(n_w, device=device)[:, None] * b - h + torch.arange(win, device=device)
            row_ok = ((rows >= 0) & (rows < H))[:, None, :].expand(n_h, n_w, win).reshape(n_h * n_w, win)
            col_ok = ((cols >= 0) & (cols < W))[None, :, :].expand(n_h, n_w, win).reshape(n_h * n_w, win)
            valid = (row_ok[:, :, None] & col_ok[:, None, :]).reshape(n_h * n_w, win * win)
            cached = self._mask_cache[key] = (valid, row_ok, col_ok)
        return cached

    def _blocks(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project once, then cut into query blocks and halo windows.

        Returns q (B*heads, N, b*b, d), k and v (B*heads, N, win*win, d) with N = blocks per map,
        as transposed views of channel-first (.., d, b*b | win*win) storage: cutting a map into
        blocks then copies contiguous rows of pixels, never transposes channels into the last dim.
        """
        B, _, H, W = x.shape
        b, h, win, d = self.block_size, self.halo_size, self.win_size, self.dim_head
        n_h, n_w = -(-H // b), -(-W // b)
        pad_h, pad_w = n_h * b - H, n_w * b - W
        G, N = B * self.heads, n_h * n_w
        q = self.to_q(x)  # B, heads*d, H, W
        if pad_h or pad_w:
            q = F.pad(q, (0, pad_w, 0, pad_h))
        q = q.view(B, self.heads, d, n_h, b, n_w, b).permute(0, 1, 3, 5, 2, 4, 6)
        q = q.reshape(G, N, d, b * b).transpose(-1, -2)  # B*heads, N, b*b, d
        k, v = self.to_kv(x).chunk(2, dim=1)  # B, heads*d, H, W each
        # a list, not a generator: torch.compile gives up on a whole frame whose generator breaks its graph
        k, v = [
            _halo_windows(t, b, h, pad_h, pad_w)  # B, n_h, n_w, heads*d, win, win
            .view(B, N, self.heads, d, win * win)
            .transpose(1, 2)
            .reshape(G, N, d, win * win)
            .transpose(-1, -2)  # B*heads, N, win*win, d
            for t in (k, v)
        ]
        return q, k, v

    def _positional_logits(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Content-geometry logits of each query against window rows and columns.

        q: (B*heads, N, b*b, d) -> (rows, cols), each (B*heads, N, b*b, win): ``q . r``.
        """
        b = self.block_size
        qb = q.unflatten(2, (b, b))  # BH, N, y, x, d
        rel_h = self.rel_height[self.rel_index]  # y, win, d
        rel_w = self.rel_width[self.rel_index]  # x, win, d
        rows = torch.einsum("nkyxd,yid->nkyxi", qb, rel_h).flatten(2, 3)
        cols = torch.einsum("nkyxd,xjd->nkyxj", qb, rel_w).flatten(2, 3)
        return rows, cols

    def _augment(self, q, k, v, valid):
        """Fold the positional logits and the padding mask into the dot product.

        logit(i, j) = s*q_i.k_j + s*q_i.r_h[i, row_j] + s*q_i.r_w[i, col_j] + mask_j
                    = [s*q_i, s*rows_i, s*cols_i, 1] . [k_j, onehot(row_j), onehot(col_j), m_j]
        so SDPA (scale=1) sees plain q/k of width d + 2*win + 1 and no bias tensor. All three are
        zero-padded to one width, a multiple of 8, which the fused (flash) kernels require.
        """
        win, d = self.win_size, self.dim_head
        width = -(-(d + 2 * win + 1) // 8) * 8
        rows, cols = self._positional_logits(q)
        one = q.new_ones(q.shape[:-1] + (1,))
        q_aug = torch.cat([q * self.scale, rows * self.scale, cols * self.scale, one], dim=-1)
        eye = torch.eye(win, dtype=k.dtype, device=k.device)
        onehot = torch.cat([eye.repeat_interleave(win, 0), eye.repeat(win, 1)], dim=-1)  # win*win, 2win
        m = torch.zeros(valid.shape, dtype=k.dtype, device=k.device).masked_fill(~valid, _MASKED_LOGIT)
        geo = torch.cat([onehot.expand(valid.shape[0], -1, -1), m[..., None]], dim=-1)  # N, win*win, 2win+1
        k_aug = torch.cat([k, geo.expand(k.shape[0], -1, -1, -1)], dim=-1)
        pad = width - q_aug.shape[-1]
        return F.pad(q_aug, (0, pad)), F.pad(k_aug, (0, pad)), F.pad(v, (0, width - d))

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        if C != self.dim:
            raise ValueError(f"HaloAttention expects {self.dim} channels, got {C}")
        b = self.block_size
        n_h, n_w = -(-H // b), -(-W // b)
        q, k, v = self._blocks(x)
        valid, row_ok, col_ok = self._key_valid(H, W, x.device)  # (N, win*win), (N, win) x 2
        if self.kind == "legacy":
            out = self._legacy_attend(q, k, v, valid)
        elif x.device.type == "cuda":
            # fused SDPA kernels (flash / memory-efficient): no logit matrix in memory
            q_aug, k_aug, v_aug = self._augment(q, k, v, valid)
            out = F.scaled_dot_product_attention(q_aug, k_aug, v_aug, scale=1.0)[..., : self.dim_head]
        else:
            # CPU: SDPA would run at the augmented width (3.5x the work); explicit in-place logits win
            rows, cols = self._positional_logits(q)
            # the key mask is separable: invalid window rows / columns get the masked logit
            rows = (rows * self.scale).masked_fill(~row_ok[:, None, :], _MASKED_LOGIT)
            cols = (cols * self.scale).masked_fill(~col_ok[:, None, :], _MASKED_LOGIT)
            out = _block_attention(q * self.scale, k, v, rows, cols)
        # out: B*heads, N, b*b, d -> B, heads*d, H, W
        out = out.reshape(B, self.heads, n_h, n_w, b, b, self.dim_head).permute(0, 1, 6, 2, 4, 3, 5)
        out = out.reshape(B, self.heads * self.dim_head, n_h * b, n_w * b)[:, :, :H, :W]
        return self.to_out(out)

    def _legacy_attend(self, q, k, v, valid):
        """The published code's attention, inverted mask included (valid keys get -max)."""
        rows, cols = self._positional_logits(q)
        # relative logits broadcast over the window: (.., b*b, win rows, win cols)
        rel = rows[..., :, None] + cols[..., None, :]
        sim = (q @ k.transpose(-1, -2) + rel.flatten(-2)) * self.scale
        sim = sim.masked_fill(valid[:, None, :], -torch.finfo(sim.dtype).max)
        return sim.softmax(dim=-1) @ v


def make_attention(kind: str, dim: int, **kwargs) -> nn.Module:
    """The attention layer of one bottleneck: ``halo``, ``legacy`` or ``none`` (identity)."""
    if kind == "none":
        return nn.Identity()
    return HaloAttention(dim, kind=kind, **kwargs)
