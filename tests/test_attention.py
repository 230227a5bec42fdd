# SPDX-License-Identifier: Apache-2.0
"""HaloAttention against an explicit per-pixel window attention written here, and its legacy kind."""

import math

import pytest
import torch

from haloae.attention import HaloAttention, make_attention


def naive_halo_attention(attn: HaloAttention, x: torch.Tensor, legacy: bool = False) -> torch.Tensor:
    """Each query pixel attends, head by head, to every pixel of its block's halo window.

    Written independently of the layer: loops over pixels, looks keys up by absolute position,
    adds q . (r_h[row] + r_w[col]) with the table row ``key_window_pos - query_block_pos + win - 1``,
    and skips keys outside the map (legacy: gives *valid* keys -max, padded keys keep q . r with
    k = v = 0, as the published code does).
    """
    x = x.double()
    B, _, H, W = x.shape
    b, h, win, d, heads = attn.block_size, attn.halo_size, attn.win_size, attn.dim_head, attn.heads
    wq = attn.to_q.weight.double()[:, :, 0, 0]
    wk, wv = attn.to_kv.weight.double()[:, :, 0, 0].chunk(2, dim=0)
    q = torch.einsum("oc,bchw->bhwo", wq, x).reshape(B, H, W, heads, d)
    k = torch.einsum("oc,bchw->bhwo", wk, x).reshape(B, H, W, heads, d)
    v = torch.einsum("oc,bchw->bhwo", wv, x).reshape(B, H, W, heads, d)
    rel_h, rel_w = attn.rel_height.double(), attn.rel_width.double()
    out = torch.zeros(B, H, W, heads, d, dtype=torch.float64)
    zero = torch.zeros(B, heads, d, dtype=torch.float64)
    for yy in range(H):
        for xx in range(W):
            y0, x0 = (yy // b) * b - h, (xx // b) * b - h
            qy, qx = yy % b, xx % b
            qq = q[:, yy, xx]
            logits, values = [], []
            for i in range(win):
                for j in range(win):
                    ky, kx = y0 + i, x0 + j
                    inside = 0 <= ky < H and 0 <= kx < W
                    if not inside and not legacy:
                        continue
                    kk = k[:, ky, kx] if inside else zero
                    vv = v[:, ky, kx] if inside else zero
                    pos = rel_h[i - qy + win - 1] + rel_w[j - qx + win - 1]
                    logit = ((qq * kk).sum(-1) + (qq * pos).sum(-1)) / math.sqrt(d)
                    if legacy and inside:
                        logit = torch.full_like(logit, -torch.finfo(torch.float32).max)
                    logits.append(logit)
                    values.append(vv)
            p = torch.stack(logits, -1).softmax(-1)  # B, heads, n_keys
            out[:, yy, xx] = torch.einsum("bhn,bnhd->bhd", p, torch.stack(values, 1))
    out = out.reshape(B, H, W, heads * d)
    w_out, b_out = attn.to_out.weight.double()[:, :, 0, 0], attn.to_out.bias.double()
    return (torch.einsum("oc,bhwc->bohw", w_out, out) + b_out[None, :, None, None]).float()


def _layer(dim, block, halo, heads=2, dim_head=4, kind="halo", seed=0):
    torch.manual_seed(seed)
    attn = HaloAttention(dim, block_size=block, halo_size=halo, heads=heads, dim_head=dim_head, kind=kind)
    with torch.no_grad():  # non-trivial bias and tables so every term matters
        attn.to_out.bias.normal_()
        attn.rel_height.normal_()
        attn.rel_width.normal_()
    return attn


@pytest.mark.parametrize(
    "H,W,block,halo",
    [(8, 8, 4, 1), (6, 9, 3, 2), (7, 5, 3, 1), (5, 11, 4, 2), (4, 4, 1, 0), (6, 6, 6, 0), (5, 5, 2, 3), (3, 3, 5, 1)],
)
def test_matches_naive_window_attention(H, W, block, halo):
    attn = _layer(dim=6, block=block, halo=halo)
    x = torch.randn(2, 6, H, W)
    ours = attn(x)
    ref = naive_halo_attention(attn, x)
    assert ours.shape == (2, 6, H, W)
    rel = (ours - ref).abs().max() / ref.abs().max()
    assert rel < 1e-5, f"relative error {rel:.2e}"


@pytest.mark.parametrize("H,W,block,halo", [(6, 9, 3, 2), (7, 5, 3, 1), (5, 5, 1, 1), (4, 6, 2, 0)])
def test_gradients_match_naive_window_attention(H, W, block, halo):
    """Input and parameter gradients (the chunked CPU core and the window extraction's own
    backward, both of its loops) equal autograd through the naive reference."""
    attn = _layer(dim=4, block=block, halo=halo).double()
    x = torch.randn(2, 4, H, W, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 4, H, W, dtype=torch.float64)
    inputs = [x, *attn.parameters()]
    ours = torch.autograd.grad(attn(x), inputs, g)
    ref_out = naive_halo_attention(attn, x)
    ref = torch.autograd.grad(ref_out, inputs, g.to(ref_out.dtype))
    for name, a, r in zip(["x", *(n for n, _ in attn.named_parameters())], ours, ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


def test_any_width_uses_inner_width_and_output_projection():
    attn = _layer(dim=29, block=3, halo=1, heads=8, dim_head=16)  # 29 % 8 != 0, as HaloAE's widths
    assert attn.to_q.out_channels == 128 and attn.to_out.out_channels == 29
    x = torch.randn(1, 29, 6, 6)
    assert (attn(x) - naive_halo_attention(attn, x)).abs().max() < 1e-4


def test_q_k_and_position_tables_receive_gradients():
    attn = _layer(dim=8, block=3, halo=1)
    attn(torch.randn(2, 8, 7, 7)).square().sum().backward()
    inner = attn.heads * attn.dim_head
    for name, grad in [
        ("q", attn.to_q.weight.grad),
        ("k", attn.to_kv.weight.grad[:inner]),
        ("v", attn.to_kv.weight.grad[inner:]),
        ("rel_height", attn.rel_height.grad),
        ("rel_width", attn.rel_width.grad),
    ]:
        assert grad is not None and grad.abs().sum() > 0, f"{name} got no gradient"


@pytest.mark.parametrize("H,W,block,halo", [(4, 4, 2, 1), (5, 7, 3, 2), (3, 3, 5, 1)])
def test_padded_keys_are_masked_not_attended(H, W, block, halo):
    # On a spatially constant map every valid key carries the same value, so any softmax over valid
    # keys returns it: the output is constant, border and ragged blocks included. A padded (zero)
    # key that took part in the softmax (the HaloNet paper's and timm's convention, or the legacy
    # inverted mask) would pull the border outputs towards the bias.
    attn = _layer(dim=4, block=block, halo=halo)
    x = torch.randn(1, 4, 1, 1).expand(1, 4, H, W).contiguous()
    out = attn(x)
    torch.testing.assert_close(out, out[:, :, :1, :1].expand_as(out), rtol=1e-5, atol=1e-5)


def test_legacy_reproduces_the_published_inverted_mask():
    attn = _layer(dim=6, block=3, halo=1, kind="legacy")
    x = torch.randn(2, 6, 9, 9, requires_grad=True)
    out = attn(x)
    ref = naive_halo_attention(attn, x.detach(), legacy=True)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    blocks = out.reshape(2, 6, 3, 3, 3, 3)  # B, C, by, y, bx, x
    # every 3x3 block outputs one constant per channel
    assert torch.allclose(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks), atol=1e-6)
    # border blocks output only the projection bias; the interior block the mean of V over its window
    bias = attn.to_out.bias[None, :, None, None]
    torch.testing.assert_close(out[:, :, :3, :3], bias.expand(2, 6, 3, 3), rtol=0, atol=1e-6)
    v = attn.to_kv(x)[:, attn.heads * attn.dim_head :]
    mean_v = v[:, :, 2:7, 2:7].mean(dim=(2, 3))
    expected = attn.to_out(mean_v[:, :, None, None])[:, :, 0, 0]
    torch.testing.assert_close(out[:, :, 4, 4], expected, rtol=1e-5, atol=1e-5)
    out.square().sum().backward()
    inner = attn.heads * attn.dim_head
    assert attn.to_q.weight.grad.abs().max() == 0
    assert attn.to_kv.weight.grad[:inner].abs().max() == 0
    assert attn.rel_height.grad.abs().max() == 0 and attn.rel_width.grad.abs().max() == 0
    assert attn.to_kv.weight.grad[inner:].abs().sum() > 0  # V and the projection still learn


def test_working_attention_is_not_constant_per_block():
    attn = _layer(dim=6, block=3, halo=1)
    out = attn(torch.randn(1, 6, 9, 9)).reshape(1, 6, 3, 3, 3, 3)
    assert (out - out[:, :, :, :1, :, :1]).abs().max() > 1e-3


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"block_size": 0}, "block_size"),
        ({"halo_size": -1}, "halo_size"),
        ({"heads": 0}, "heads"),
        ({"kind": "global"}, "kind"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HaloAttention(8, **kwargs)


def test_wrong_channel_count_is_reported():
    with pytest.raises(ValueError, match="expects 8 channels"):
        HaloAttention(8, block_size=2, halo_size=1)(torch.randn(1, 4, 4, 4))


def test_make_attention_none_is_identity():
    assert isinstance(make_attention("none", 8), torch.nn.Identity)
    assert isinstance(make_attention("halo", 8, block_size=2, halo_size=1), HaloAttention)


@pytest.mark.slow  # finite differences over ~2000 inputs: tens of seconds per case on 2 cores
@pytest.mark.parametrize("chunk_bytes", [None, 1, 2 * 3 * 4 * 9 * 8])  # whole, 1 per chunk, 2 + 2 + 1
def test_cpu_block_attention_backward_passes_gradcheck(chunk_bytes, monkeypatch):
    """The chunked CPU core (forward and its hand-written backward) against finite differences,
    with one chunk, single-slice chunks and a ragged last chunk."""
    from haloae import attention
    from haloae.attention import _BlockAttention

    if chunk_bytes is not None:
        monkeypatch.setattr(attention, "_CHUNK_BYTES", chunk_bytes)
    torch.manual_seed(0)
    G, N, Q, win, d = 5, 3, 4, 3, 5
    q, k, v = (torch.randn(G, N, n, d, dtype=torch.float64, requires_grad=True) for n in (Q, win * win, win * win))
    rows, cols = (torch.randn(G, N, Q, win, dtype=torch.float64, requires_grad=True) for _ in range(2))
    rows.data[:, 0, :, 0] = -1e4  # a masked window row and column (the layer folds its mask so)
    cols.data[:, 1, :, 2] = -1e4
    assert torch.autograd.gradcheck(_BlockAttention.apply, (q, k, v, rows, cols))


def test_fused_sdpa_path_matches_the_cpu_path():
    """The CUDA path (augmented q/k through scaled_dot_product_attention), run here on the CPU."""
    import torch.nn.functional as F

    attn = _layer(dim=6, block=3, halo=2).double()
    x = torch.randn(2, 6, 7, 8, dtype=torch.float64)
    q, k, v = attn._blocks(x)
    q_aug, k_aug, v_aug = attn._augment(q, k, v, attn._key_valid(7, 8, x.device)[0])
    assert q_aug.shape[-1] % 8 == 0
    fused = F.scaled_dot_product_attention(q_aug, k_aug, v_aug, scale=1.0)[..., : attn.dim_head]
    fused = fused.reshape(2, attn.heads, 3, 3, 3, 3, attn.dim_head).permute(0, 1, 6, 2, 4, 3, 5)
    fused = attn.to_out(fused.reshape(2, attn.heads * attn.dim_head, 9, 9)[:, :, :7, :8])
    torch.testing.assert_close(fused, attn(x))


@pytest.mark.parametrize(("size", "block", "halo"), [(8, 4, 2), (12, 2, 1), (7, 3, 1)])  # few windows, many, padded
def test_halo_windows_backward_matches_unfolds(size, block, halo):
    """The hand-written window extraction against F.pad + unfold + permute under autograd, both
    branches of its backward (loop over windows, loop over window offsets) and a padded side."""
    import torch.nn.functional as F

    from haloae.attention import _HaloWindows

    torch.manual_seed(0)
    x = torch.randn(2, 3, size, size, dtype=torch.float64, requires_grad=True)
    extra = -size % block
    win = block + 2 * halo
    out = _HaloWindows.apply(x, block, halo, extra, extra)
    ref = F.pad(x, (halo, halo + extra, halo, halo + extra)).unfold(2, win, block).unfold(3, win, block)
    ref = ref.permute(0, 2, 3, 1, 4, 5)
    assert torch.equal(out, ref)
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, x, g)
    (ref_grad,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(grad, ref_grad)

