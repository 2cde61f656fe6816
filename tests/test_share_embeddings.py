"""share_all_embeddings: one embedding matrix for the source, the target and (tied) the output projection."""

import pytest
import torch
from tiny import TINY_DIMS

from torchlingo.checkpoint import load_model, save_checkpoint
from torchlingo.config import Config
from torchlingo.errors import ConfigError
from torchlingo.models import SimpleTransformer

V = 19
SMALL = Config(**TINY_DIMS, dropout=0.0)


def test_one_matrix_serves_source_target_and_output():
    shared = SimpleTransformer(V, V, SMALL, share_all_embeddings=True)
    apart = SimpleTransformer(V, V, SMALL)
    assert shared.src_embed.weight is shared.tgt_embed.weight is shared.output_proj.weight
    assert apart.src_embed.weight is not apart.tgt_embed.weight
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(apart) - count(shared) == V * 16


def test_the_shared_gradient_is_the_sum_of_the_separate_ones():
    """Sharing is tying, nothing else: with equal starting weights, the shared matrix's gradient is the sum of
    the source and target embeddings' gradients in the untied model (float64)."""
    torch.manual_seed(0)
    shared = SimpleTransformer(V, V, SMALL, share_all_embeddings=True).double()
    apart = SimpleTransformer(V, V, SMALL).double()
    state = shared.state_dict()
    apart.load_state_dict(state)  # both keys hold the one matrix: the untied model starts from equal copies
    src, tgt = torch.randint(4, V, (3, 7)), torch.randint(4, V, (3, 6))
    for model in (shared, apart):
        model(src, tgt).square().mean().backward()
    assert apart.src_embed.weight.grad is not None and apart.tgt_embed.weight.grad is not None
    expected = apart.src_embed.weight.grad + apart.tgt_embed.weight.grad
    torch.testing.assert_close(shared.tgt_embed.weight.grad, expected, rtol=1e-12, atol=1e-12)


def test_sharing_survives_a_checkpoint(tmp_path):
    model = SimpleTransformer(V, V, SMALL, share_all_embeddings=True).eval()
    path = save_checkpoint({"model": model.state_dict(), "model_args": model.args}, tmp_path / "model.pt")
    loaded = load_model(path)[0]
    assert loaded.args["share_all_embeddings"] is True
    assert loaded.src_embed.weight is loaded.tgt_embed.weight is loaded.output_proj.weight
    src, tgt = torch.randint(4, V, (2, 5)), torch.randint(4, V, (2, 4))
    with torch.no_grad():
        assert torch.equal(loaded(src, tgt), model(src, tgt))


def test_two_vocabularies_cannot_share():
    with pytest.raises(ValueError, match="source has 19 entries, target 23"):
        SimpleTransformer(V, 23, SMALL, share_all_embeddings=True)
    with pytest.raises(ConfigError, match=r"^share_all_embeddings: needs one vocabulary .*joint_vocab: true"):
        Config(share_all_embeddings=True, tokenizer="word")
    with pytest.raises(ConfigError, match="^share_all_embeddings:"):
        Config(share_all_embeddings=True, joint_vocab=False)
