"""The loss equals a hand computation, and padding changes neither the loss nor the gradients."""

import math

import pytest
import torch
import torch.nn.functional as F
from tiny import TINY_DIMS

from torchlingo.config import Config
from torchlingo.data_processing import pad_batch
from torchlingo.loss import sequence_loss
from torchlingo.models import SimpleTransformer

V = 12


def tiny_model():
    torch.manual_seed(0)
    config = Config(**TINY_DIMS, dropout=0.0)
    return SimpleTransformer(V, V, config).double()


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_loss_equals_hand_computation(eps):
    model = tiny_model()
    src = pad_batch([torch.tensor([4, 5, 6]), torch.tensor([7, 8])])
    tgt = pad_batch([torch.tensor([9, 10]), torch.tensor([11, 4, 5, 6])])  # row 0 has padding
    loss, n_tokens = sequence_loss(model, src, tgt, pad_idx=0, label_smoothing=eps)

    logp = F.log_softmax(model(src, tgt[:, :-1]), dim=-1)
    terms = []
    for b in range(tgt.size(0)):
        for t in range(tgt.size(1) - 1):
            y = int(tgt[b, t + 1])
            if y == 0:
                continue
            # smoothed target: (1 - eps) on y, plus eps spread evenly over all V classes
            terms.append(-(1 - eps) * logp[b, t, y] - eps / V * logp[b, t].sum())
    assert int(n_tokens) == len(terms) == 3 + 5  # "y </s>" tokens per row
    assert loss.item() == pytest.approx(sum(t.item() for t in terms) / len(terms), rel=1e-12)


def test_loss_matches_torch_cross_entropy_with_ignore_index():
    model = tiny_model()
    src = pad_batch([torch.tensor([4, 5, 6, 7]), torch.tensor([8])])
    tgt = pad_batch([torch.tensor([9]), torch.tensor([10, 11, 4])])
    loss, _ = sequence_loss(model, src, tgt, 0, 0.1)
    logits = model(src, tgt[:, :-1])
    reference = torch.nn.CrossEntropyLoss(ignore_index=0, label_smoothing=0.1)(
        logits.reshape(-1, V), tgt[:, 1:].reshape(-1)
    )
    assert loss.item() == pytest.approx(reference.item(), rel=1e-12)


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_padding_changes_neither_loss_nor_gradients():
    src_seqs = [torch.tensor([4, 5, 6]), torch.tensor([7, 8, 9, 10, 11])]
    tgt_seqs = [torch.tensor([5, 6, 7, 8]), torch.tensor([9])]
    model = tiny_model()
    src, tgt = pad_batch(src_seqs), pad_batch(tgt_seqs)
    loss, n = sequence_loss(model, src, tgt, 0, 0.1)
    loss.backward()
    g = grads(model)

    model.zero_grad()
    extra = 7  # many more pad columns on both sides
    src_padded = torch.cat([src, torch.zeros(2, extra, dtype=torch.long)], dim=1)
    tgt_padded = torch.cat([tgt, torch.zeros(2, extra, dtype=torch.long)], dim=1)
    loss_padded, n_padded = sequence_loss(model, src_padded, tgt_padded, 0, 0.1)
    loss_padded.backward()
    assert int(n_padded) == int(n)
    assert loss_padded.item() == pytest.approx(loss.item(), rel=1e-12)
    g_padded = grads(model)
    assert g.keys() == g_padded.keys()
    for name in g:
        torch.testing.assert_close(g_padded[name], g[name], rtol=1e-10, atol=1e-12, msg=name)


def test_each_sentence_loss_is_independent_of_its_batch_mates():
    """A sentence's loss in a padded batch equals its loss alone (no attention across padding)."""
    model = tiny_model()
    a_src, a_tgt = torch.tensor([4, 5]), torch.tensor([6, 7, 8])
    b_src, b_tgt = torch.tensor([9, 10, 11, 4, 5, 6]), torch.tensor([7])
    alone, n_alone = sequence_loss(model, pad_batch([a_src]), pad_batch([a_tgt]), 0)
    both, n_both = sequence_loss(model, pad_batch([a_src, b_src]), pad_batch([a_tgt, b_tgt]), 0)
    b_alone, n_b = sequence_loss(model, pad_batch([b_src]), pad_batch([b_tgt]), 0)
    combined = (alone * n_alone + b_alone * n_b) / (n_alone + n_b)
    assert both.item() == pytest.approx(combined.item(), rel=1e-12)
    assert not math.isnan(both.item())


def test_bf16_loss_matches_autocast_cross_entropy_over_full_logits():
    """Under bf16 autocast the projection and loss run fused (the logits are overwritten by their gradient, the
    softmax in fp32): same loss and gradients as autocast's own path, `CrossEntropyLoss` over `logits.float()`."""
    torch.manual_seed(0)
    config = Config(d_model=32, n_heads=2, num_encoder_layers=1, num_decoder_layers=2, d_ff=64, dropout=0.0)
    model = SimpleTransformer(300, 300, config)  # fp32 weights; 300 rows of logits span three loss chunks
    g = torch.Generator().manual_seed(1)
    src = pad_batch([torch.randint(4, 300, (n,), generator=g) for n in range(3, 43)])
    tgt = pad_batch([torch.randint(4, 300, (n,), generator=g) for n in range(20, 0, -1)] * 2)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=0, label_smoothing=0.1)

    def loss_and_grads(compute):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = compute()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    fused, fused_grads = loss_and_grads(lambda: sequence_loss(model, src, tgt, 0, 0.1)[0])
    plain, plain_grads = loss_and_grads(
        lambda: criterion(model(src, tgt[:, :-1]).float().flatten(0, 1), tgt[:, 1:].flatten())
    )
    assert (tgt[:, 1:] != 0).sum() > 256 and fused.dtype == torch.float32
    torch.testing.assert_close(fused, plain, rtol=1e-3, atol=0)
    for a, b in zip(fused_grads, plain_grads):
        assert a.dtype == torch.float32
        assert (a - b).norm() <= 0.02 * b.norm()


def test_fp16_keeps_the_plain_loss_path(monkeypatch):
    """fp16 needs GradScaler's scale inside the logits' gradient, so it does not take the fused path."""
    import torchlingo.loss as loss_module

    model = tiny_model().float()
    src = pad_batch([torch.tensor([4, 5, 6]), torch.tensor([7, 8])])
    tgt = pad_batch([torch.tensor([9, 10]), torch.tensor([11, 4, 5, 6])])
    monkeypatch.setattr(loss_module.ProjectedCrossEntropy, "apply", None)  # would raise if called
    with torch.autocast("cpu", dtype=torch.float16):
        loss, n = sequence_loss(model, src, tgt, 0, 0.1)
        logits = model(src, tgt[:, :-1]).float()
    expected = F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=0, label_smoothing=0.1)
    assert n.item() == 8 and loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected)


def test_fused_loss_under_no_grad_equals_the_training_loss():
    """Validation runs the loss under no_grad, where the fused path skips writing the logits' gradient."""
    model = tiny_model()
    src = pad_batch([torch.tensor([4, 5, 6]), torch.tensor([7, 8])])
    tgt = pad_batch([torch.tensor([9, 10]), torch.tensor([11, 4, 5, 6])])
    with_grad, _ = sequence_loss(model, src, tgt, 0, 0.1)
    with torch.no_grad():
        without, _ = sequence_loss(model, src, tgt, 0, 0.1)
    assert with_grad.requires_grad and not without.requires_grad
    torch.testing.assert_close(without, with_grad.detach(), rtol=1e-12, atol=0)


def test_reused_logits_buffer_gives_the_same_loss_and_gradients_as_fresh_logits():
    """LabelSmoothedCrossEntropy keeps one logits block across steps of varying size: same numbers as without it."""
    from torchlingo.loss import LabelSmoothedCrossEntropy

    torch.manual_seed(0)
    proj = torch.nn.Linear(8, 50, bias=False).double()
    kept, fresh = LabelSmoothedCrossEntropy(0, 0.1), LabelSmoothedCrossEntropy(0, 0.1)
    sizes = []
    for rows in (30, 7, 41, 12):  # grows, shrinks, grows past the 1/8 slack, shrinks
        hidden = torch.randn(2, rows, 8, dtype=torch.float64, requires_grad=True)
        targets = torch.randint(0, 50, (2, rows))
        results = []
        for loss_fn in (kept, fresh):
            fresh.logits_buffer.block = None  # the reference allocates anew every step
            proj.zero_grad()
            loss, n = loss_fn(hidden, proj, targets)
            (g_hidden,) = torch.autograd.grad(loss, hidden, retain_graph=True)
            loss.backward()
            results.append((loss.item(), int(n), g_hidden, proj.weight.grad.clone()))
        (a_loss, a_n, a_gh, a_gw), (b_loss, b_n, b_gh, b_gw) = results
        assert (a_loss, a_n) == (b_loss, b_n)
        assert torch.equal(a_gh, b_gh) and torch.equal(a_gw, b_gw)
        sizes.append(kept.logits_buffer.block.numel())
    assert sizes[0] == sizes[1] >= 2 * 30 * 50  # the smaller batch reused the block
    assert sizes[2] >= 2 * 41 * 50 > sizes[1] and sizes[3] == sizes[2]


def test_a_backward_after_its_logits_were_overwritten_is_refused():
    """Two forwards before one backward would share the block: autograd's version check stops it loudly."""
    from torchlingo.loss import LabelSmoothedCrossEntropy

    proj = torch.nn.Linear(8, 20, bias=False)
    loss_fn = LabelSmoothedCrossEntropy(0, 0.1)
    first, _ = loss_fn(torch.randn(1, 5, 8, requires_grad=True), proj, torch.randint(1, 20, (1, 5)))
    loss_fn(torch.randn(1, 5, 8, requires_grad=True), proj, torch.randint(1, 20, (1, 5)))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        first.backward()
