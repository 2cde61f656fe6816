"""Richer decoding: n-best lists, sampling (seeded), forced target prefixes; in the Translator and at the CLI."""

import io
import json
import sys

import pytest
import torch
from test_decoding import random_batch, random_model, toy_translator

from torchlingo.search import Sampling, beam_search, greedy_decode


def test_nbest_is_sorted_and_its_first_is_the_single_best():
    translator, texts = toy_translator(beam_size=4, n_best=3, amp="none")
    single, _ = toy_translator(beam_size=4, amp="none")
    for nbest, best in zip(translator.translate_nbest(texts), single.translate(texts)):
        assert len(nbest) == 3 and nbest[0][0] == best
        scores = [score for _, score in nbest]
        assert scores == sorted(scores, reverse=True)


def test_sampling_is_reproducible_and_top_k_1_is_greedy():
    model, src = random_model(5), random_batch(6, 12)
    greedy = greedy_decode(model, src, max_len_b=5, return_scores=True)
    top1 = greedy_decode(model, src, max_len_b=5, return_scores=True, sampling=Sampling("topk", top_k=1))
    assert top1 == greedy

    def sample(seed, **kw):
        g = torch.Generator().manual_seed(seed)
        return greedy_decode(model, src, max_len_b=5, sampling=Sampling(**kw), generator=g)

    for kw in ({"method": "topk", "top_k": 0, "temperature": 2.0}, {"method": "topp", "top_p": 0.8}):
        assert sample(1, **kw) == sample(1, **kw)
        assert sample(1, **kw) != sample(2, **kw)  # 12 sentences at temperature 2 / a nucleus: some differ


def test_translator_sampling_is_reproducible_and_top_k_1_equals_greedy():
    greedy, texts = toy_translator(beam_size=1, amp="none")
    top1, _ = toy_translator(beam_size=1, amp="none", sampling=Sampling("topk", top_k=1, seed=3))
    assert top1.translate(texts) == greedy.translate(texts)
    a, _ = toy_translator(beam_size=1, amp="none", sampling=Sampling("topk", temperature=3.0, seed=7))
    assert a.translate_nbest(texts) == a.translate_nbest(texts)


@pytest.mark.parametrize("beam", [1, 3])
def test_prefixed_hypotheses_start_with_their_prefix(beam):
    model, src = random_model(11), random_batch(12, 6)
    prefixes = [[7, 8, 9], [], [5], [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22], [4, 4], [6]]
    if beam == 1:
        outs = [[ids] for ids in greedy_decode(model, src, max_len_b=3, prefixes=prefixes)]
        plain = [[ids] for ids in greedy_decode(model, src, max_len_b=3)]
    else:
        outs = [[h for h, _ in nb] for nb in beam_search(model, src, 3, max_len_b=3, n_best=3, prefixes=prefixes)]
        plain = [[h for h, _ in nb] for nb in beam_search(model, src, 3, max_len_b=3, n_best=3)]
    for prefix, hyps, free in zip(prefixes, outs, plain):
        assert all(h[: len(prefix)] == prefix for h in hyps)
        if not prefix:
            assert hyps == free  # a sentence without a prefix decodes as it would alone


def test_translator_prefix_text():
    translator, texts = toy_translator(beam_size=2, amp="none")
    prefixes = ["el gato" if i % 2 == 0 else "" for i in range(len(texts))]
    plain = translator.translate(texts)
    for i, (hyp, prefix) in enumerate(zip(translator.translate(texts, prefixes), prefixes)):
        assert hyp.startswith(prefix) and (prefix or hyp == plain[i])


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_cli_nbest_scores_json_sampling_and_prefix(tmp_path, capsys, monkeypatch):
    from cli_helpers import write_config, write_corpus

    from torchlingo.cli import main

    root = write_corpus(tmp_path)
    assert main(["train", str(write_config(root, "opts", beam_size=3, num_epochs=1))]) == 0
    ckpt = str(root / "runs" / "opts" / "checkpoints" / "last.pt")
    src = tmp_path / "src.txt"
    src.write_text("ein hund\n\nzwei katzen\n")
    capsys.readouterr()
    assert main(["translate", "--checkpoint", ckpt, "--input", str(src), "--n-best", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split("\t")[0] for ln in lines] == ["0", "0", "0", "1", "2", "2", "2"]
    assert main(["translate", "--checkpoint", ckpt, "--input", str(src), "--n-best", "2", "--json"]) == 0
    objs = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert [(o["index"], o["rank"]) for o in objs] == [(0, 0), (0, 1), (1, 0), (2, 0), (2, 1)]
    assert main(["translate", "--checkpoint", ckpt, "--input", str(src), "--scores"]) == 0
    assert all(len(ln.split("\t")) == 2 for ln in capsys.readouterr().out.splitlines())
    sampled = []
    for _ in range(2):
        argv = ["translate", "--checkpoint", ckpt, "--input", str(src), "--sampling", "topp", "--seed", "4"]
        assert main([*argv, "--temperature", "1.5"]) == 0
        sampled.append(capsys.readouterr().out)
    assert sampled[0] == sampled[1]
    prefix = tmp_path / "prefix.txt"
    first = lines[0].split("\t")[2].split()[:1]
    prefix.write_text(f"{' '.join(first)}\n\n\n")
    assert main(["translate", "--checkpoint", ckpt, "--input", str(src), "--prefix", str(prefix)]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith(" ".join(first))
    assert main(["translate", "--checkpoint", ckpt, "--input", str(src), "--top-k", "3"]) == 2
    assert "only with --sampling" in capsys.readouterr().err
    assert main(["translate", "--checkpoint", ckpt, "--input", str(src), "--n-best", "4"]) == 0  # the run's beam 3
    assert main(["translate", "--checkpoint", ckpt, "--input", str(src), "--n-best", "4", "--beam-size", "2"]) == 2
    assert "--beam-size 4 or more" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", Terminal("ein hund\nzwei katzen\n"))  # interactive: a line at a time
    assert main(["translate", "--checkpoint", ckpt]) == 0
    out = capsys.readouterr()
    assert "Ctrl-D" in out.err
    assert main(["translate", "--checkpoint", ckpt, "--input", str(src)]) == 0
    batch = capsys.readouterr().out.splitlines()
    assert out.out.splitlines() == [batch[0], batch[2]]
