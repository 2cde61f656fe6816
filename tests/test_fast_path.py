"""The fast training path trains the same model as the textbook one, and token-budget batches carry little padding."""

import math
import os
import random
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from torchlingo.config import Config
from torchlingo.data_processing import TokenBudgetBatchSampler, pad_batch
from torchlingo.loss import sequence_loss
from torchlingo.models import SimpleTransformer
from torchlingo.models.transformer import CrossAttention
from torchlingo.runtime import cpu_has_fast_bf16

V = 40


def small_model(dropout: float = 0.0) -> SimpleTransformer:
    config = Config(d_model=32, n_heads=4, num_encoder_layers=2, num_decoder_layers=2, d_ff=64, dropout=dropout)
    return SimpleTransformer(V, V, config).double()


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sentences of different lengths, so both sides carry padding."""
    g = torch.Generator().manual_seed(seed)
    src = [torch.randint(4, V, (n,), generator=g) for n in (3, 9, 6, 1, 7)]
    tgt = [torch.randint(4, V, (n,), generator=g) for n in (5, 2, 8, 4, 1)]
    return pad_batch(src), pad_batch(tgt)


def naive_attention(attn, x, memory=None, key_pad=None, causal=False):
    """Multi-head attention written out: separate q/k/v slices of the fused weights, explicit masked softmax."""
    d = x.size(-1)
    h = attn.n_heads
    if isinstance(attn, CrossAttention):
        q = F.linear(x, attn.q_proj.weight, attn.q_proj.bias)
        k, v = F.linear(memory, attn.kv_proj.weight, attn.kv_proj.bias).split(d, dim=-1)
    else:
        w, b = attn.qkv_proj.weight, attn.qkv_proj.bias
        q, k, v = (F.linear(x, w[i * d : (i + 1) * d], b[i * d : (i + 1) * d]) for i in range(3))
    split = lambda t: t.view(t.size(0), t.size(1), h, d // h).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // h)
    if key_pad is not None:
        scores = scores.masked_fill(key_pad[:, None, None, :], float("-inf"))
    if causal:
        t = scores.size(-1)
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(x.shape)
    return attn.out_proj(out)


def naive_logits(model, src, tgt_in):
    """The whole model again, layer by layer, with naive attention: logits for every position, padding included."""
    pad = src == model.pad_idx
    x = model.src_embed(src) * math.sqrt(model.d_model) + model.positions[: src.size(1)]
    for layer in model.encoder_layers:
        x = x + naive_attention(layer.attn, layer.norm1(x), key_pad=pad)
        x = x + layer.ff(layer.norm2(x))
    memory = model.encoder_norm(x)
    y = model.tgt_embed(tgt_in) * math.sqrt(model.d_model) + model.positions[: tgt_in.size(1)]
    for layer in model.decoder_layers:
        y = y + naive_attention(layer.self_attn, layer.norm1(y), causal=True)
        y = y + naive_attention(layer.cross_attn, layer.norm2(y), memory, key_pad=pad)
        y = y + layer.ff(layer.norm3(y))
    return model.output_proj(model.decoder_norm(y))


def loss_and_grads(model, compute):
    model.zero_grad(set_to_none=True)
    loss = compute()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_fast_loss_matches_full_logits_cross_entropy_and_naive_attention(label_smoothing):
    torch.manual_seed(0)
    model = small_model()
    src, tgt = batch()
    criterion = nn.CrossEntropyLoss(ignore_index=0, label_smoothing=label_smoothing)

    fast_loss, fast_grads = loss_and_grads(model, lambda: sequence_loss(model, src, tgt, 0, label_smoothing)[0])
    full = lambda logits: criterion(logits.reshape(-1, V), tgt[:, 1:].reshape(-1))  # noqa: E731
    ref_loss, ref_grads = loss_and_grads(model, lambda: full(model(src, tgt[:, :-1])))
    naive_loss, naive_grads = loss_and_grads(model, lambda: full(naive_logits(model, src, tgt[:, :-1])))

    assert fast_loss.item() > 1.0  # an untrained model: about log(40) = 3.7
    torch.testing.assert_close(fast_loss, ref_loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fast_loss, naive_loss, rtol=1e-10, atol=1e-12)
    assert fast_grads.keys() == ref_grads.keys() == naive_grads.keys()
    assert len(fast_grads) == len(list(model.parameters()))
    for name in fast_grads:
        torch.testing.assert_close(fast_grads[name], ref_grads[name], rtol=1e-8, atol=1e-10, msg=name)
        torch.testing.assert_close(fast_grads[name], naive_grads[name], rtol=1e-8, atol=1e-10, msg=name)


def test_padding_positions_do_not_change_loss_or_gradients():
    """Appending a padding-only column (as a bigger batch would) changes nothing."""
    model = small_model()
    src, tgt = batch(1)
    loss, grads = loss_and_grads(model, lambda: sequence_loss(model, src, tgt, 0, 0.1)[0])
    wide_src, wide_tgt = F.pad(src, (0, 3)), F.pad(tgt, (0, 2))
    wide_loss, wide_grads = loss_and_grads(model, lambda: sequence_loss(model, wide_src, wide_tgt, 0, 0.1)[0])
    torch.testing.assert_close(loss, wide_loss, rtol=1e-10, atol=1e-12)
    for name in grads:
        torch.testing.assert_close(grads[name], wide_grads[name], rtol=1e-8, atol=1e-10, msg=name)


def test_token_budget_batches_keep_target_padding_under_ten_percent():
    rng = random.Random(0)
    # Lengths like a real corpus: a long tail (1..120 tokens), sources correlated with but not equal to targets.
    tgt_lengths = [min(120, max(1, int(rng.lognormvariate(2.6, 0.5)))) for _ in range(6000)]
    src_lengths = [max(1, int(n * rng.uniform(0.7, 1.4))) for n in tgt_lengths]
    sampler = TokenBudgetBatchSampler(src_lengths, tgt_lengths, max_tokens=2500, seed=3)
    real = padded = 0
    for b in sampler:
        t = [tgt_lengths[i] + 1 for i in b]  # predicted positions: the sentence and </s>
        real, padded = real + sum(t), padded + len(t) * max(t)
        assert max(max(src_lengths[i], tgt_lengths[i]) + 2 for i in b) * len(b) <= 2500 or len(b) == 1
    assert sorted(i for b in sampler for i in b) == list(range(6000))
    assert 1 - real / padded < 0.10


@pytest.mark.parametrize("p, dtype", [(0.1, torch.float32), (0.3, torch.bfloat16), (0.5, torch.float64)])
def test_dropout_keeps_each_value_with_probability_one_minus_p_and_rescales(p, dtype):
    from torchlingo.fastpath import Dropout

    drop = Dropout(p)
    x = torch.ones(400, 1001, dtype=dtype)  # an odd size: the last 64-bit draw is used in part
    torch.manual_seed(0)
    y = drop(x)
    assert y.dtype == dtype and y.shape == x.shape
    kept = y != 0
    std = math.sqrt(p * (1 - p) / (x.numel() / 4))
    for lane in range(4):  # each 16-bit lane of a 64-bit draw is its own Bernoulli(1 - p)
        assert abs(kept.flatten()[lane::4].float().mean().item() - (1 - p)) < 5 * std
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # seeded like every other random draw of a run
    assert not torch.equal(drop(x), y)
    x.requires_grad_(True)
    y = drop(x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y != 0).to(dtype) / (1 - p))
    assert drop.eval()(x) is x


def test_activation_dropout_is_its_own_setting_and_off_by_default():
    """dropout covers embeddings and block outputs; activation_dropout the feed-forward hidden layer (as fairseq)."""
    config = Config(
        d_model=32, n_heads=4, num_encoder_layers=2, num_decoder_layers=2, d_ff=64, dropout=0.2, activation_dropout=0.3
    )
    model = SimpleTransformer(V, V, config)
    layers = [*model.encoder_layers, *model.decoder_layers]
    assert {layer.ff.dropout.p for layer in layers} == {0.3}
    assert {layer.dropout.p for layer in layers} == {model.embed_dropout.p} == {0.2}
    rebuilt = SimpleTransformer.from_args(model.args)  # checkpoints keep the setting
    assert {layer.ff.dropout.p for layer in [*rebuilt.encoder_layers, *rebuilt.decoder_layers]} == {0.3}
    assert Config().activation_dropout == 0.0
    x = torch.randn(3, 5, 32)
    default_ff = SimpleTransformer(V, V, config.replace(activation_dropout=0.0)).train().encoder_layers[0].ff
    assert torch.equal(default_ff(x), default_ff(x))  # nothing random inside the block


def test_bf16_autocast_attention_runs_in_fp32_on_cpu(monkeypatch):
    """Under CPU bf16 autocast the projections run in bf16 but attention itself gets fp32 inputs (PyTorch's bf16
    CPU attention is slower, backward above all); the output still matches naive attention."""
    import torchlingo.models.transformer as transformer

    seen = []
    softmax = torch.Tensor.softmax

    def recording_softmax(scores, *args, **kwargs):
        seen.append(scores.dtype)
        return softmax(scores, *args, **kwargs)

    monkeypatch.setattr(transformer.torch.Tensor, "softmax", recording_softmax)
    torch.manual_seed(0)
    attn = small_model().float().decoder_layers[0].self_attn
    x = torch.randn(3, 7, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x, causal=True)
    out.float().sum().backward()
    assert seen == [torch.float32]
    assert out.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()
    torch.testing.assert_close(out.float(), naive_attention(attn, x, causal=True), rtol=0.05, atol=0.02)


@pytest.mark.parametrize("fused", [False, True], ids=["formula", "fused kernel"])
@pytest.mark.parametrize("case", ["padding mask", "causal", "causal after cached positions"])
def test_cpu_attention_formula_equals_scaled_dot_product_attention(case, fused, monkeypatch):
    """Both paths of `attend` (the formula on CPU, SDPA's fused kernel elsewhere) give the values and gradients of
    attention written with an explicit mask, float64."""
    import torchlingo.models.transformer as transformer

    monkeypatch.setattr(transformer, "use_fused_attention", lambda q: fused)
    torch.manual_seed(0)
    attn = small_model().encoder_layers[0].attn
    t, s = (4, 9) if case == "causal after cached positions" else (6, 6)
    q, k, v = (torch.randn(3, 4, n, 8, dtype=torch.float64, requires_grad=True) for n in (t, s, s))
    mask = (torch.arange(s) < torch.tensor([s, 4, 2])[:, None])[:, None, None, :] if case == "padding mask" else None
    causal = case != "padding mask"
    ours = attn.attend(q, k, v, mask, causal=causal, fp32=False)
    if case == "causal after cached positions":  # query i is position s - t + i: it sees keys 0 .. s - t + i
        bias = torch.ones(t, s, dtype=torch.bool).tril(s - t)
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    else:
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    torch.testing.assert_close(ours, want, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(want)
    grads = torch.autograd.grad(ours, (q, k, v), g)
    for ours_grad, want_grad in zip(grads, torch.autograd.grad(want, (q, k, v), g)):
        torch.testing.assert_close(ours_grad, want_grad, rtol=1e-10, atol=1e-12)


def test_a_training_step_is_the_same_with_the_fused_attention_kernel(monkeypatch):
    """The whole model's loss and gradients, float64: the CPU formula against F.scaled_dot_product_attention (what
    other devices run), with padding on both sides and the decoder's causal self-attention."""
    import torchlingo.models.transformer as transformer

    src, tgt = batch()
    results = []
    for fused in (False, True):
        monkeypatch.setattr(transformer, "use_fused_attention", lambda q, fused=fused: fused)
        torch.manual_seed(0)
        model = small_model()
        loss, _ = sequence_loss(model, src, tgt, label_smoothing=0.1)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-12, atol=1e-12)
    assert len(grads_a) == len(grads_b) > 10
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_accepts_the_reuse_freed_memory_setting():
    """mallopt refuses an mmap threshold above its 32 MB maximum by returning 0: the values used must be accepted."""
    from torchlingo.fastpath import reuse_freed_memory

    assert reuse_freed_memory() is True
    assert reuse_freed_memory(keep_mb=64) is True


def test_kernel_caches_are_bounded_unless_the_environment_says_otherwise(monkeypatch):
    from torchlingo.fastpath import KERNEL_CACHES, bound_kernel_caches

    for name in KERNEL_CACHES:
        monkeypatch.delenv(name, raising=False)
    assert bound_kernel_caches() is True
    assert [os.environ[name] for name in KERNEL_CACHES] == ["64", "64"]
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "1024")  # the user's own choice stays
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY")
    assert bound_kernel_caches(entries=8) is True
    assert [os.environ[name] for name in KERNEL_CACHES] == ["8", "1024"]
    assert bound_kernel_caches() is False


BOUNDED_RUN = """
import os, random, sys
import torch
from torchlingo.fastpath import bound_kernel_caches
if sys.argv[1] == "bounded":
    bound_kernel_caches(entries=16)
torch.set_num_threads(1)
lin, rng = torch.nn.Linear(64, 256), random.Random(0)
def rss_mb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024
for i in range(300):
    if i == 50:
        start = rss_mb()
    x = torch.randn(rng.randint(1, 400), 64)  # a new row count nearly every call, as token-budget batches have
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lin(x).float().sum().backward()
print(rss_mb() - start)
"""


@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="bf16 matmuls go through oneDNN only with native bf16")
def test_bounded_kernel_caches_stop_bf16_memory_growing_with_new_shapes():
    """The same 250 new shapes: the default caches keep a kernel for each, the bounded ones 16 (a subprocess: the
    caches read their size once, at the first bf16 matmul)."""
    env = {k: v for k, v in os.environ.items() if k not in ("LRU_CACHE_CAPACITY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY")}
    grown = {
        how: int(
            subprocess.run(
                [sys.executable, "-c", BOUNDED_RUN, how], env=env, capture_output=True, text=True, check=True
            ).stdout
        )
        for how in ("default", "bounded")
    }
    assert grown["default"] > 4 * max(grown["bounded"], 10), grown
