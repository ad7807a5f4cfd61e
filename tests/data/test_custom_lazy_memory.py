"""Data larger than memory: an HDF5 file read lazily trains with memory bounded independently of the file's size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest

from mmfusion.data import custom, load_data
from mmfusion.data.custom import H5Features

ROOT = Path(__file__).resolve().parents[2]
DIMS = {"text": (20, 300), "audio": (50, 74), "vision": (50, 35)}  # 46 KB of float32 per clip
CLIP_BYTES = sum(T * d * 4 for T, d in DIMS.values())


def write_big(path: Path, n_train: int, n_eval: int = 64) -> int:
    """An mmfusion HDF5 file (uncompressed, so that writing and reading it is quick), written a block at a time;
    the number of feature bytes it holds."""
    with h5py.File(path, "w") as h5:
        h5.attrs["format"] = "mmfusion"
        for split, n in (("train", n_train), ("valid", n_eval), ("test", n_eval)):
            rng = np.random.default_rng(0)
            for m, (T, d) in DIMS.items():
                ds = h5.create_dataset(f"{split}/{m}/features", shape=(n, T, d), dtype=np.float32, chunks=(1, T, d))
                base = rng.normal(size=(T, d)).astype(np.float32)
                for a in range(0, n, 512):
                    scale = ((np.arange(a, min(n, a + 512)) % 7 + 1) / 7).astype(np.float32)
                    ds[a:a + len(scale)] = base[None] * scale[:, None, None]
                h5[f"{split}/{m}/lengths"] = np.arange(n) % T + 1
            h5[f"{split}/labels"] = (np.arange(n) % 7 - 3).astype(np.float32)
    return (n_train + 2 * n_eval) * CLIP_BYTES


def test_lazy_batches_hold_only_what_they_read(tmp_path, monkeypatch):
    """Fast: reading and checking a 28 MB file lazily and batching all of it allocates under a fifth of it (traced
    allocations: 1 MiB blocks checked, then batches of 32 clips; a reader that loaded the arrays would allocate all
    28 MB, and more for the checks)."""
    from mmfusion.engine.loaders import make_loader

    p = tmp_path / "medium.h5"
    total = write_big(p, 500, 50)
    monkeypatch.setattr(custom, "SCAN_BLOCK_BYTES", 2**20)  # the check reads 1 MiB blocks
    tracemalloc.start()
    try:
        bundle = load_data(f"h5:{p}", {"lazy": True})
        n = 0
        for batch in make_loader(bundle, "train", 32, True, seed=1):
            n += len(batch.ids)
            assert batch.features["text"].shape[1] <= 20
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == 500 and isinstance(bundle.splits["train"].features["audio"], H5Features)
    assert total > 27e6 and peak < total / 5, (peak, total)


def rss_growth(data: Path, out: Path, *extra: str) -> dict:
    """Train one epoch in a fresh process; its peak RSS growth over the RSS after importing torch and mmfusion."""
    code = (
        "import json, resource, sys\n"
        "import lightning, torch\n"
        "import mmfusion.engine.train, mmfusion.models\n"
        "from mmfusion.cli.main import main\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "rc = main(['fit', '--model', 'lf_lstm_tiny', '--data', 'h5:' + sys.argv[1], '--max-epochs', '1',\n"
        "           '--batch-size', '256', '--threads', '1', '--no-progress', '--out', sys.argv[2], *sys.argv[3:]])\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'rc': rc, 'growth_mb': (peak - base) / 1024}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "MMFUSION_KERNELS": "0", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code, str(data), str(out), *extra], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0
    return result


@pytest.mark.slow
def test_training_on_a_lazily_read_file_keeps_rss_bounded_independently_of_its_size(tmp_path):
    """One epoch on a 98 MB and on a 282 MB file with ``data_args.lazy=true``: the peak RSS of the two training
    processes differs by less than 32 MB, while the files differ by 184 MB (reading them into memory would add
    that difference, twice over while the values are checked: about 1 GB for the larger file)."""
    small, big = tmp_path / "small.h5", tmp_path / "big.h5"
    size_small = write_big(small, 2000)
    size_big = write_big(big, 6000)
    try:
        lazy = ("--set", "data_args.lazy=true", "--num-workers", "0")
        grow_small = rss_growth(small, tmp_path / "runs_small", *lazy)["growth_mb"]
        grow_big = rss_growth(big, tmp_path / "runs_big", *lazy)["growth_mb"]
    finally:
        small.unlink()
        big.unlink()
    assert (size_big - size_small) / 2**20 > 5 * 32
    assert grow_big - grow_small < 32, (grow_small, grow_big)
