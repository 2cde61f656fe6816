"""Data-parallel training: 2 ranks with gloo on CPU, launched by torchrun (`python -m torch.distributed.run`).

Each multi-process test runs tiny models with one thread a rank under a hard timeout, so a hang fails the test
instead of blocking the suite. The runs use tests/_train_driver.py (the fault injection of the single-process kill
tests, with FAULT@RANK for one rank only) and tests/_ddp_step.py (one float64 step).
"""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_toy_tsv
from tiny import TINY_MODEL

from torchlingo import distributed
from torchlingo.data_processing import NMTDataset, TokenBudgetBatchSampler, make_loader
from torchlingo.errors import ConfigError
from torchlingo.training import train_model

TESTS = Path(__file__).parent
ROOT = TESTS.parent
DRIVER, STEP = TESTS / "_train_driver.py", TESTS / "_ddp_step.py"
TIMEOUT = 180  # seconds for one torchrun launch; a tiny run takes about 10


def torchrun(*args, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *map(str, args)]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def launch(*args, nproc: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run(torchrun(*args, nproc=nproc), env=env(), capture_output=True, text=True, timeout=TIMEOUT)


def driver(parent: Path, data: Path, fault: str = "none", *extra: str, nproc: int = 2):
    """tests/_train_driver.py on `nproc` ranks: the resume tests' tiny run with 4 pairs a batch (24 global batches an
    epoch: 12 steps an epoch on 2 ranks, 24 in all; last.pt every 3 steps, validation every 4, patience 3)."""
    return launch(DRIVER, parent, data, fault, "batch_size=4", *extra, nproc=nproc)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    write_toy_tsv(root / "data" / "train.tsv", 96, seed=0)
    write_toy_tsv(root / "data" / "val.tsv", 24, seed=1)
    return root


@pytest.fixture(scope="module")
def reference(data):
    """The uninterrupted 2-rank run."""
    proc = driver(data / "reference", data / "data")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = data / "reference" / "run"
    return torch.load(run / "final.pt"), torch.load(run / "final.rank1.pt"), run / "checkpoints" / "last.pt"


def assert_same_run(final: dict, ref: dict) -> None:
    for key, value in ref["model"].items():
        assert torch.equal(final["model"][key], value), key
    for key in ("train_losses", "val_losses", "history", "steps", "stopped_early"):
        assert final[key] == ref[key], key


def assert_same_weights(a: dict, b: dict) -> None:
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


# -- 1. sharding ---------------------------------------------------------------------------------------------
def lengths(n: int = 300, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 40, (n,), generator=g).tolist(), torch.randint(1, 40, (n,), generator=g).tolist()


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_see_disjoint_batches_whose_union_is_the_one_process_epoch(world):
    src, tgt = lengths()
    one = TokenBudgetBatchSampler(src, tgt, max_tokens=300, seed=3)
    assert one.num_replicas == 1 and one.batches() == one.global_batches()  # one process: the list itself
    for epoch in range(3):
        one.set_epoch(epoch)
        everything = one.batches()
        ranks = [TokenBudgetBatchSampler(src, tgt, 300, seed=3, num_replicas=world, rank=r) for r in range(world)]
        for s in ranks:
            s.set_epoch(epoch)
        shares = [s.batches() for s in ranks]
        assert len({len(share) for share in shares}) == 1  # the same number of steps on every rank
        kept = len(everything) // world * world  # an incomplete last round is dropped
        assert sorted(map(sorted, sum(shares, []))) == sorted(map(sorted, everything[:kept]))  # union, disjoint
        assert len(everything) - kept < world
        assert all(s.state_dict() == {"seed": 3, "epoch": epoch, "order": 2} for s in ranks)


def corpus_with_batches(parity: int):
    """Lengths of a corpus whose epoch has an even (0) or odd (1) number of batches of 400 tokens."""
    for n in range(150, 250):
        src, tgt = lengths(n)
        if len(TokenBudgetBatchSampler(src, tgt, 400, seed=0)) % 2 == parity:
            return src, tgt
    raise AssertionError("no such corpus")


def test_an_even_epoch_is_shared_completely_and_an_evaluation_loader_keeps_every_batch():
    src, tgt = corpus_with_batches(0)
    everything = TokenBudgetBatchSampler(src, tgt, 400, seed=0).batches()
    shares = [TokenBudgetBatchSampler(src, tgt, 400, seed=0, num_replicas=2, rank=r).batches() for r in (0, 1)]
    assert shares == [everything[0::2], everything[1::2]]  # nothing dropped

    src, tgt = corpus_with_batches(1)
    everything = TokenBudgetBatchSampler(src, tgt, 400, seed=0).batches()
    even = [TokenBudgetBatchSampler(src, tgt, 400, seed=0, num_replicas=2, rank=r) for r in (0, 1)]
    assert len(even[0]) == len(even[1]) == len(everything) // 2  # training: the odd batch out is dropped
    rest = [TokenBudgetBatchSampler(src, tgt, 400, seed=0, num_replicas=2, rank=r, even=False) for r in (0, 1)]
    assert [len(s) for s in rest] == [len(everything) // 2 + 1, len(everything) // 2]
    assert sorted(rest[0].batches() + rest[1].batches()) == sorted(everything)  # evaluation: every batch


def test_make_loader_shards_by_torchruns_environment(toy_data, monkeypatch):
    from torchlingo.config import Config

    config = Config(tokenizer="word", batch_size=8)
    ds = NMTDataset(toy_data / "data" / "train.tsv", config=config)
    alone = [b.tolist() for b, _ in make_loader(ds, config, shuffle=True)]
    monkeypatch.setenv("WORLD_SIZE", "2")
    shares = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        shares.append([b.tolist() for b, _ in make_loader(ds, config, shuffle=True)])
    assert len(alone) == 12 and [len(s) for s in shares] == [6, 6]
    assert shares[0] == alone[0::2] and shares[1] == alone[1::2]


# -- 2. one step on two ranks = one process on the union ------------------------------------------------------
def test_one_step_on_two_ranks_equals_one_process_on_the_union_of_their_batches(data):
    """float64. The runs differ only in how sums are grouped (per-rank partial sums, the all-reduce, another padded
    length): measured 1e-16 at most here. 1e-12 leaves room for that and nothing else: each rank's loss normalized
    by its own tokens instead of both ranks' (plain DDP averaging) is off by 1e-3 (1e-5 with clipping), measured by
    disabling distributed.token_share."""
    import _ddp_step as S

    out = data / "step"
    proc = launch(STEP, out, data / "data")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for case in S.CASES:
        config, train, model = S.build(case, data / "data", out / "single")
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        union = S.union_batches(train, config)
        sampler = TokenBudgetBatchSampler(train.src_lengths, train.tgt_lengths, config.max_tokens, seed=config.seed)
        first = sampler.global_batches()[:2]
        tokens = [sum(train.tgt_lengths[i] + 1 for i in b) for b in first]
        assert tokens[0] != tokens[1]  # so a per-rank normalization would show
        train_model(model, union, None, config)
        expected = model.state_dict()
        for rank in (0, 1):
            got = torch.load(out / f"{case}.rank{rank}.pt")
            for key, value in expected.items():
                assert value.dtype == torch.float64
                torch.testing.assert_close(got[key], value, rtol=0, atol=1e-12, msg=f"{case} rank {rank} {key}")
                moved = (value - initial[key]).abs().max()
                assert moved > 1e-6, (case, key)  # the step really changed every weight


# -- 3. exact resume ------------------------------------------------------------------------------------------
def test_a_two_rank_run_killed_mid_epoch_and_resumed_is_bitwise_identical(data, reference):
    ref0, ref1, ref_last = reference
    parent = data / "killed"
    killed = driver(parent, data / "data", "batch:8")  # both ranks SIGKILL themselves at their 8th batch
    assert killed.returncode != 0
    ckpts = parent / "run" / "checkpoints"
    state = torch.load(ckpts / "last.pt", weights_only=True)
    assert (state["position"]["step"], state["position"]["epoch"], state["world_size"]) == (6, 0, 2)
    assert len(state["ranks"]) == 2
    resumed = driver(parent, data / "data", "none", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step 6 (" in resumed.stderr
    assert_same_run(torch.load(parent / "run" / "final.pt"), ref0)
    assert_same_run(torch.load(parent / "run" / "final.rank1.pt"), ref1)
    assert_same_weights(ref0, ref1)  # the ranks agree
    last, ref_state = torch.load(ckpts / "last.pt", weights_only=True), torch.load(ref_last, weights_only=True)
    for key in ("optimizer", "scheduler", "early_stopping", "position", "ranks"):
        assert repr(last[key]) == repr(ref_state[key]), key


def test_sigterm_to_one_rank_stops_both_at_the_same_step_and_the_resume_is_exact(data, reference):
    """The signal reaches rank 1 only (torchrun forwards one to each rank, not at the same instant); the flag is
    all-reduced each step, so both ranks stop after step 5 and rank 0 writes last.pt there."""
    parent = data / "term"
    cmd = torchrun(DRIVER, parent, data / "data", "sleep:5@1", "batch_size=4")
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY "), line
        os.kill(int(line.split()[1]), signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert err.count("error: SIGTERM received: stopped at step 5; saved ") == 2, err[-3000:]  # each rank's exit
    state = torch.load(parent / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["position"]["step"] == 5
    resumed = driver(parent, data / "data", "none", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(torch.load(parent / "run" / "final.pt"), reference[0])


def test_resuming_under_another_world_size_is_a_one_line_error(data, reference):
    parent = data / "reference"
    proc = subprocess.run(
        [sys.executable, str(DRIVER), str(parent), str(data / "data"), "none", "--resume", "batch_size=4"],
        env=env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 2
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("error: ") and "written by a run of 2 process(es), this one has 1" in message


# -- 4. decisions for all ranks -------------------------------------------------------------------------------
def test_early_stopping_decided_on_rank_0_stops_every_rank(data):
    """Rank 0's validation loss rises from the first validation (patience 3): both ranks stop at step 16, the
    4th validation; the same fault on rank 1 alone changes nothing, since rank 0's record is the one followed."""
    stopped = driver(data / "stop0", data / "data", "worse:1@0")
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    finals = [torch.load(data / "stop0" / "run" / name) for name in ("final.pt", "final.rank1.pt")]
    assert [(f["steps"], f["stopped_early"]) for f in finals] == [(16, True), (16, True)]
    assert_same_weights(*finals)
    ignored = driver(data / "stop1", data / "data", "worse:1@1,nan:3-3@1")
    assert ignored.returncode == 0, ignored.stderr[-3000:]
    finals = [torch.load(data / "stop1" / "run" / name) for name in ("final.pt", "final.rank1.pt")]
    assert [(f["steps"], f["stopped_early"]) for f in finals] == [(24, False), (24, False)]
    assert_same_weights(*finals)  # the NaN of rank 1 in step 3 skipped the update on rank 0 as well
    assert "step 3: NaN or infinite loss, update skipped" in ignored.stderr  # logged by rank 0, whose loss was fine


def test_nan_on_one_rank_until_max_bad_steps_stops_every_rank(data):
    proc = driver(data / "nan", data / "data", "nan:2-99@1", "max_bad_steps=3")
    assert proc.returncode != 0
    assert proc.stderr.count("error: step 4: the loss was NaN or infinite in 3 steps in a row") == 2  # both ranks


# -- the command line -----------------------------------------------------------------------------------------
def write_config(root: Path, data: Path, **extra) -> Path:
    lines = {
        "train_file": data / "train.tsv",
        "val_file": data / "val.tsv",
        "test_file": data / "val.tsv",
        **TINY_MODEL,
        "batch_size": 8,
        "num_epochs": 1,
        "amp": "none",
        "beam_size": 1,
        "tensorboard_dir": root / "runs",
        "experiment_name": "cli",
        **extra,
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "config.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in lines.items()), encoding="utf-8")
    return path


def test_torchrun_m_torchlingo_train_writes_one_run_directory_from_rank_0(data):
    config = write_config(data / "cli", data / "data")
    proc = launch("-m", "torchlingo", "train", config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = data / "cli" / "runs" / "cli"
    assert proc.stdout.count("run directory: ") == 1 and proc.stdout.count("test BLEU") == 1
    assert proc.stderr.count("epoch 1 | step 6 |") == 1  # 12 batches, 6 a rank; rank 0 logs
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "src_vocab.txt", "tgt_vocab.txt", "checkpoints", "metrics.json", "test.hyp"} <= names
    assert len([n for n in names if n.startswith("events.out.tfevents")]) == 1  # one TensorBoard writer
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"best.pt", "last.pt"}
    logged = (run / "train.log").read_text(encoding="utf-8")
    assert logged.count("environment: ") == 1 and logged.count(" epoch 1 | step 6 |") == 1  # rank 0 alone writes it
    assert logged.count("epoch 1/1 | step 6 | loss ") == 1 and "2 process(es)" in logged


def test_torchrun_trains_on_shards_that_rank_0_alone_prepares(data):
    """prepared_data: auto under torchrun: rank 0 prepares the shards once while rank 1 waits, then rank 1 opens
    them; both train from them, the same number of steps (96 pairs, 8 a batch: 12 batches, 6 a rank), to the same
    weights."""
    config = write_config(data / "shards", data / "data", prepared_data="auto", experiment_name="shards")
    proc = launch(DRIVER, "cli", "record", "train", config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.findall(r"PREPARING rank \d", proc.stdout) == ["PREPARING rank 0"]
    run = data / "shards" / "runs" / "shards"
    assert (run / "data" / "manifest.json").is_file() and proc.stdout.count("test BLEU") == 1
    ranks = torch.load(run / "final.pt"), torch.load(run / "final.rank1.pt")
    assert [(r["dataset"], r["steps"], r["batches"]) for r in ranks] == [("ShardedDataset", 6, 6)] * 2
    assert_same_weights(*ranks)


def test_an_error_on_one_rank_is_one_line_and_no_rank_hangs(data):
    config = write_config(data / "err", data / "data")
    proc = launch(DRIVER, "cli", "error:3@1", "train", config)
    assert proc.returncode != 0
    assert "torchlingo: error: injected.tsv:3: injected error" in proc.stderr
    assert not re.search(r"\[rank\d\]: Traceback", proc.stderr)  # no rank's traceback: only torchrun's report
    assert proc.stderr.count("Traceback (most recent call last)") <= 1
    assert "stopped because another rank failed" in proc.stderr or "exitcode  : -15" in proc.stderr


# -- 5. CUDA / NCCL (skipped without GPUs) --------------------------------------------------------------------
def test_backend_and_device_binding(monkeypatch):
    assert distributed.backend_for(torch.device("cpu")) == "gloo"
    assert distributed.backend_for(torch.device("cuda")) == "nccl"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert distributed.bind_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="puts every rank on one GPU"):
        distributed.bind_device(torch.device("cuda:1"))
    with pytest.raises(ConfigError, match="mps"):
        distributed.bind_device(torch.device("mps"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_rank_binds_to_its_local_gpu(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert distributed.bind_device(torch.device("cuda")) == torch.device("cuda", 0)
    assert torch.cuda.current_device() == 0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_two_ranks_on_two_gpus_with_nccl_train_in_step(data):
    proc = driver(data / "nccl", data / "data", "nan:3-3@1", "device=cuda")
    assert proc.returncode == 0, proc.stderr[-3000:]
    finals = [torch.load(data / "nccl" / "run" / name) for name in ("final.pt", "final.rank1.pt")]
    assert finals[0]["steps"] == 24
    assert_same_weights(*finals)
    state = torch.load(data / "nccl" / "run" / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")
    assert state["world_size"] == 2


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_torchrun_cli_on_two_gpus(data):
    config = write_config(data / "cli-gpu", data / "data", device="cuda")
    proc = launch("-m", "torchlingo", "train", config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run directory: ") == 1
