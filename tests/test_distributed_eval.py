"""``torchrun -m fqvit_kernels.eval`` across processes (gloo on CPU): the sharding, the collectives'
error handling, and the whole digits table equal to the single-process one."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fqvit_kernels.distributed import BatchShardSampler, Group

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distributed_workers import collective_worker, spawn_ranks  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("length", [1, 7, 197, 256, 577, 719])
@pytest.mark.parametrize("batch_size", [1, 5, 256])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_batch_shards_cover_every_item_once_in_the_single_process_batches(length, batch_size, world):
    single = list(BatchShardSampler(length, batch_size, Group()))
    assert single == [list(range(i, min(i + batch_size, length))) for i in range(0, length, batch_size)]
    shards = [list(BatchShardSampler(length, batch_size, Group(rank, world))) for rank in range(world)]
    assert [len(s) for s in shards] == [len(BatchShardSampler(length, batch_size, Group(r, world))) for r in range(world)]
    dealt = sorted((b for shard in shards for b in shard), key=lambda b: b[0] if b else -1)
    assert dealt == single  # every batch once, unchanged: no padding, no image twice
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_batch_shard_rejects_a_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        BatchShardSampler(10, 0, Group())


def test_counts_are_summed_and_objects_gathered(tmp_path):
    results, _ = spawn_ranks(collective_worker, 3, tmp_path, "counts")
    expected = [1 + 2 + 3, 0 + 10 + 20, 3 * 2**40]
    for rank in range(3):
        assert results[rank] == f"ok {expected} ['r0', 'r1', 'r2']", results[rank]


def test_an_exception_on_one_rank_is_raised_on_every_rank(tmp_path):
    results, _ = spawn_ranks(collective_worker, 2, tmp_path, "raise-on-1")
    for rank in range(2):
        first = results[rank].splitlines()[0]
        assert first.startswith("error DistributedEvalError: the test step failed on 1 of 2 ranks"), results[rank]
        assert "rank 1: ValueError: calibration batch 3 contains NaN values" in first


def test_a_rank_that_dies_gives_an_error_not_a_hang(tmp_path):
    results, seconds = spawn_ranks(collective_worker, 2, tmp_path, "exit-on-1", timeout_s=10.0, join_s=90.0)
    assert results[1] == "no report (exit code 3)"
    first = results[0].splitlines()[0]
    assert first.startswith("error DistributedEvalError: the test step: lost contact with another rank"), first
    assert seconds < 90


def test_ranks_with_different_models_are_refused(tmp_path):
    results, _ = spawn_ranks(collective_worker, 2, tmp_path, "differ-on-1")
    for rank in range(2):
        assert results[rank].startswith("error DistributedEvalError: the test model differs between ranks: ranks [1]"), \
            results[rank]


def _eval(tmp_path, name, nproc=None):
    out = tmp_path / f"{name}.json"
    cmd = [sys.executable, "-m", "fqvit_kernels.eval", "--quiet", "--json", str(out), "--dist-timeout", "300"]
    if nproc:
        cmd[1:1] = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    payload = json.loads(out.read_text())
    rows = [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in payload["rows"]]
    return rows, payload, done.stdout


@pytest.mark.slow
def test_torchrun_table_equals_the_single_process_table(tmp_path):
    """719 test images in 3 batches of 256: 2 ranks get 2 + 1 batches, 4 ranks 1 + 1 + 1 + 0."""
    single, _, single_out = _eval(tmp_path, "single")
    for nproc in (2, 4):
        rows, payload, out = _eval(tmp_path, f"ranks{nproc}", nproc)
        assert payload["environment"]["world_size"] == nproc
        assert rows == single  # every top-1, agreement and block-code figure, exactly
        assert out.count("| Full precision") == 1  # the table is printed once, by rank 0
    assert single_out.count("| Full precision") == 1


@pytest.mark.slow
def test_torchrun_imagenet_path_equals_the_single_process_run(tmp_path):
    """The ImageFolder path (random deit_tiny weights, 11 readable images + 1 truncated JPEG, batches
    of 4 over 2 ranks): same rows, same image count and the broken file named once."""
    pytest.importorskip("torchvision")
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for cls in ("a", "b", "c"):
        (tmp_path / "val" / cls).mkdir(parents=True)
        for i in range(4):
            pixels = torch.randint(0, 256, (40, 40, 3), generator=gen, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "val" / cls / f"img{i}.jpg", quality=90)
    broken = tmp_path / "val" / "b" / "img2.jpg"
    broken.write_bytes(broken.read_bytes()[:200])
    args = ["--model", "deit_tiny_patch16_224", "--data", str(tmp_path), "--batch-size", "4", "--workers", "0",
            "--calib-batches", "1", "--calib-batch-size", "2"]

    def run(name, nproc=None):
        out = tmp_path / f"{name}.json"
        cmd = [sys.executable, "-m", "fqvit_kernels.eval", "--quiet", "--json", str(out), *args]
        if nproc:
            cmd[1:1] = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
        done = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return json.loads(out.read_text())

    single, multi = run("single"), run("ranks2", 2)
    strip = lambda payload: [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in payload["rows"]]  # noqa: E731
    assert strip(multi) == strip(single)
    assert multi["test_images"] == single["test_images"] == 11
    assert len(multi["skipped_images"]) == 1 and "img2.jpg" in multi["skipped_images"][0]
