"""Data over the memory budget is streamed from disk with the in-memory path's split, values, checks, batches and resume.

Every test makes its data in tmp_path (a .npy of a few thousand rows, a folder of small PNGs) and sets the budget
below its size; the in-memory run of the same data is the reference, compared exactly.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
from ddp_ranks import free_port, rank_env
from PIL import Image
from safetensors.torch import load_file, save_file

import vaezoo
from vaezoo.core.distributed import exit_leaving_process_group
from vaezoo.data import DataSplits, StreamedArray, StreamingData, TensorData, load_data
from vaezoo.data.budget import DEFAULT_BUDGET_FRACTION, MEMORY_BUDGET_ENV, memory_budget
from vaezoo.data.limits import memory_bytes
from vaezoo.data.streaming import WORKERS_ENV, NpyRows
from vaezoo.training.batches import StreamedBatches, TensorBatches
from vaezoo.training.loop import StageLoop

TINY_BUDGET_MB = 0.05  # 51 KiB: below every dataset here, so each is streamed, and passes over it take several chunks


@pytest.fixture(autouse=True)
def _no_workers(monkeypatch) -> None:
    """Batches read in the test process unless a test asks for workers (each worker costs a process start)."""
    monkeypatch.setenv(WORKERS_ENV, "0")
    monkeypatch.delenv(MEMORY_BUDGET_ENV, raising=False)


def both(path, **kwargs) -> tuple[DataSplits, DataSplits]:
    """(in memory, streamed) splits of the same data with the same seed."""
    return load_data(path, **kwargs), load_data(path, memory_budget_mb=TINY_BUDGET_MB, **kwargs)


def assert_same_splits(in_memory: DataSplits, streamed: DataSplits) -> None:
    assert (streamed.input_shape, streamed.num_classes, streamed.class_names, streamed.name, streamed.source) == (
        in_memory.input_shape, in_memory.num_classes, in_memory.class_names, in_memory.name, in_memory.source)
    for split in ("train", "val", "test"):
        memory_part, streamed_part = getattr(in_memory, split), getattr(streamed, split)
        assert isinstance(streamed_part, StreamingData) and isinstance(streamed_part.x, StreamedArray)
        assert streamed_part.x.shape == memory_part.x.shape
        assert torch.equal(streamed_part.x[:], memory_part.x), split  # bit for bit, every row of every split
        if memory_part.y is None:
            assert streamed_part.y is None
        else:
            assert torch.equal(streamed_part.y, memory_part.y)


@pytest.fixture
def vectors(tmp_path):
    """3,000 rows of 64 float32 features far outside [0, 1]: min-max scaled with the train split's statistics."""
    path = tmp_path / "vectors.npy"
    np.save(path, (np.random.default_rng(0).normal(size=(3000, 64)) * 3 + 1).astype(np.float32))
    return path


def write_pngs(folder, classes: int = 2, per_class: int = 30, size: int = 12, colour_every: int = 0):
    """``per_class`` random PNGs of ``size`` pixels in each of ``classes`` subfolders; every ``colour_every``-th in RGB."""
    rng = np.random.default_rng(1)
    for label in range(classes):
        (folder / f"class{label}").mkdir(parents=True)
        for i in range(per_class):
            if colour_every and i % colour_every == 0:
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB").save(
                    folder / f"class{label}" / f"{i:03}.png")
            else:
                Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), "L").save(
                    folder / f"class{label}" / f"{i:03}.png")
    return folder


@pytest.mark.parametrize("kind", ["float features", "uint8 (N, H, W)", "float64 (N, H, W, C) in [0, 1]"])
def test_a_npy_over_the_budget_is_memory_mapped_and_gives_the_in_memory_split_and_values(tmp_path, kind, caplog) -> None:
    rng = np.random.default_rng(2)
    array = {"float features": (rng.normal(size=(2500, 40)) * 5).astype(np.float32),
             "uint8 (N, H, W)": rng.integers(0, 256, (2000, 10, 10), dtype=np.uint8),
             "float64 (N, H, W, C) in [0, 1]": rng.random((600, 8, 8, 3))}[kind]
    np.save(tmp_path / "data.npy", array)
    with caplog.at_level(logging.INFO, logger="vaezoo.data"):
        in_memory, streamed = both(tmp_path / "data.npy", seed=5)
    assert type(in_memory.train) is TensorData
    assert_same_splits(in_memory, streamed)
    said = caplog.text
    assert "loading it into memory" in said and "within the memory budget" in said
    assert "streaming it from disk (a memory-mapped .npy)" in said and "over the memory budget of 51.2 KiB" in said


def test_rows_are_taken_as_a_tensor_takes_them(vectors) -> None:
    in_memory, streamed = both(vectors)
    x, reference = streamed.train.x, in_memory.train.x
    mask = torch.rand(len(x)) < 0.3
    for index in (7, -1, torch.tensor(4), slice(10, 400, 7), slice(-30, None), torch.tensor([9, 2, 2, 700]),
                  np.array([-3, 0]), [5, 1], mask, torch.tensor([], dtype=torch.long)):
        assert torch.equal(x[index], reference[index]), index
    assert torch.equal(streamed.val[3:9].x, in_memory.val[3:9].x) and type(streamed.val[3:9]) is TensorData
    assert torch.equal(torch.isnan(x), torch.isnan(reference))  # answered chunk by chunk (evaluate's bits/dim uses it)
    assert streamed.train.to("cpu") is streamed.train  # it stays on disk; the trainer moves each batch
    with pytest.raises(IndexError, match="row 2400 is out of range for streamed data of 2400 rows"):
        x[torch.tensor([0, 2400])]
    with pytest.raises(IndexError, match="indexed by rows only"):
        x[:, 0]
    with pytest.raises(vaezoo.DataError, match="torch.sum does not take streamed data .* take rows first"):
        torch.sum(x)


@pytest.mark.parametrize("workers", [0, 1], ids=["in process", "one worker"])
def test_a_streamed_run_trains_exactly_as_the_in_memory_run(vectors, workers, monkeypatch) -> None:
    """The same batches in the same order, and nothing drawn from the global RNG the model's noise comes from."""
    monkeypatch.setenv(WORKERS_ENV, str(workers))
    in_memory, streamed = both(vectors, seed=1)
    results, weights = [], []
    for splits in (in_memory, streamed):
        torch.manual_seed(0)
        model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(64,))
        results.append(vaezoo.train(model, splits, epochs=2, batch_size=100, lr=3e-3, progress=False, device="cpu"))
        weights.append(model.state_dict())
    memory_run, streamed_run = results
    assert [r["train"] for r in streamed_run.history] == [r["train"] for r in memory_run.history]
    assert [r["val"]["neg_elbo"] for r in streamed_run.history] == [r["val"]["neg_elbo"] for r in memory_run.history]
    assert memory_run.history[1]["train"]["loss"] < memory_run.history[0]["train"]["loss"]  # it did train
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_an_image_folder_over_the_budget_is_decoded_per_image_with_the_same_values_labels_and_training(tmp_path) -> None:
    folder = write_pngs(tmp_path / "pets", colour_every=7)  # grayscale and RGB mixed: all read as 3 channels
    Image.fromarray(np.full((12, 12), 40000, dtype=np.uint16)).save(folder / "class1" / "zz_16bit.png")  # 16-bit
    in_memory, streamed = both(folder, seed=2)
    assert streamed.input_shape == (3, 12, 12) and streamed.class_names == ["class0", "class1"]
    assert_same_splits(in_memory, streamed)
    runs = []
    for splits in (in_memory, streamed):
        torch.manual_seed(0)
        model = vaezoo.create_model("cvae", preset="tiny", input_shape=(3, 12, 12), num_classes=2)
        runs.append(vaezoo.train(model, splits, epochs=2, batch_size=16, progress=False, device="cpu"))
    assert [r["train"] for r in runs[1].history] == [r["train"] for r in runs[0].history]
    drop = ("samples_per_s",)  # a timing; every figure, bits/dim included, is the same
    assert {k: v for k, v in runs[1].val_metrics.items() if k not in drop} == {
        k: v for k, v in runs[0].val_metrics.items() if k not in drop}


def test_each_rank_is_given_the_rows_it_is_given_in_memory(tmp_path) -> None:
    """DDP: rank r of 2 takes order[step * 64 + r * 32 :][:32] on both paths, labels included."""
    in_memory, streamed = both(write_pngs(tmp_path / "digits", classes=3, per_class=40), seed=0)
    order = torch.randperm(len(in_memory.train), generator=torch.Generator().manual_seed(4))
    device = torch.device("cpu")
    for rank in (0, 1):
        memory_batches = TensorBatches(in_memory.train.x, in_memory.train.y, device).epoch(order, 1, 64, rank, 32)
        streamed_batches = StreamedBatches(streamed.train.x, streamed.train.y, device).epoch(order, 1, 64, rank, 32)
        for (x_memory, y_memory), (x_streamed, y_streamed) in zip(memory_batches, streamed_batches, strict=True):
            assert torch.equal(x_memory, x_streamed) and torch.equal(y_memory, y_streamed)
            assert torch.equal(x_memory, in_memory.train.x[order[rank * 32 : rank * 32 + 32]])


def test_a_resumed_streamed_run_goes_on_with_the_batch_the_uninterrupted_run_took(vectors, tmp_path, monkeypatch) -> None:
    in_memory, streamed = both(vectors)
    torch.manual_seed(0)
    reference = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(64,))
    vaezoo.train(reference, in_memory, epochs=3, batch_size=100, progress=False, device="cpu")

    original = StageLoop.run_epoch

    def interrupted(self, epoch, generator):
        if epoch == 2:
            raise KeyboardInterrupt  # a Ctrl-C during the third epoch, after two checkpoints
        return original(self, epoch, generator)

    monkeypatch.setattr(StageLoop, "run_epoch", interrupted)
    torch.manual_seed(0)
    model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(64,))
    with pytest.raises(KeyboardInterrupt):
        vaezoo.train(model, streamed, out_dir=tmp_path / "run", epochs=3, batch_size=100, progress=False, device="cpu")
    monkeypatch.setattr(StageLoop, "run_epoch", original)
    resumed = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(64,))
    result = vaezoo.train(resumed, streamed, out_dir=tmp_path / "run", resume=True, epochs=3, batch_size=100,
                          progress=False, device="cpu")
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in resumed.state_dict().items())


@pytest.mark.parametrize("allow_missing", [False, True])
def test_nan_and_inf_are_refused_chunk_by_chunk_with_the_in_memory_message(tmp_path, allow_missing) -> None:
    array = np.random.default_rng(3).random((3000, 64)).astype(np.float32)
    array[1234, 5] = np.nan  # past the first chunks
    array[2999, 63] = np.nan
    array[2500, 1] = np.inf
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(vaezoo.DataError) as in_memory:
        load_data(tmp_path / "bad.npy", allow_missing=allow_missing)
    with pytest.raises(vaezoo.DataError) as streamed:
        load_data(tmp_path / "bad.npy", allow_missing=allow_missing, memory_budget_mb=TINY_BUDGET_MB)
    assert str(streamed.value) == str(in_memory.value)
    expected = "1 Inf values (first at sample 2500" if allow_missing else "2 NaN and 1 Inf values (first at sample 1234"
    assert expected in str(streamed.value)
    array[2500, 1] = 0.5
    np.save(tmp_path / "missing.npy", array)
    if allow_missing:  # NaN kept as a missing value, in the same places
        in_memory_splits, streamed_splits = both(tmp_path / "missing.npy", allow_missing=True)
        for split in ("train", "val", "test"):
            torch.testing.assert_close(getattr(streamed_splits, split).x[:], getattr(in_memory_splits, split).x,
                                       rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("shape", [(40000,), (400, 10, 10, 10, 2)], ids=["1-d", "5-d"])
def test_a_bad_shape_is_refused_from_the_header_with_the_in_memory_message(tmp_path, shape) -> None:
    np.save(tmp_path / "odd.npy", np.zeros(shape, dtype=np.float32))
    messages = []
    for budget in (None, TINY_BUDGET_MB):
        with pytest.raises(vaezoo.DataError) as error:
            load_data(tmp_path / "odd.npy", memory_budget_mb=budget)
        messages.append(str(error.value))
    assert messages[0] == messages[1] and "expected (N, D), (N, H, W), (N, C, H, W) or (N, H, W, C)" in messages[0]


def test_the_trainer_checks_a_streamed_split_as_it_checks_a_tensor(tmp_path) -> None:
    """Values a Bernoulli likelihood cannot score, read chunk by chunk: the same one-line error as for tensors."""
    values = np.random.default_rng(4).random((2000, 16)).astype(np.float32) * 3 - 1  # in [-1, 2]
    np.save(tmp_path / "raw.npy", values)
    streamed = StreamedArray(NpyRows(tmp_path / "raw.npy", "none", (16,)), np.arange(2000), chunk_rows=300)
    messages = []
    for x in (torch.from_numpy(values), streamed):
        splits = DataSplits(TensorData(x) if isinstance(x, torch.Tensor) else StreamingData(x),
                            TensorData(torch.rand(10, 16)), TensorData(torch.rand(10, 16)), "raw", (16,), 0, None, "raw")
        with pytest.raises(vaezoo.DataError) as error:
            vaezoo.train(vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(16,)), splits, epochs=1,
                         progress=False)
        messages.append(str(error.value))
    low, high = float(values.min()), float(values.max())
    assert messages[0] == messages[1] == (f"the train split holds values in [{low:g}, {high:g}] but the Bernoulli "
                                          "likelihood needs [0, 1]; scale the data (vaezoo.data.load_data does) or use "
                                          "likelihood='gaussian'")


def test_an_image_that_no_longer_decodes_is_the_in_memory_one_line_error(tmp_path, monkeypatch) -> None:
    folder = write_pngs(tmp_path / "broken", classes=1, per_class=40)
    bad = folder / "class0" / "013.png"
    bad.write_bytes(bad.read_bytes()[:60])  # the header survives, the pixels do not
    with pytest.raises(vaezoo.DataError) as in_memory:
        load_data(folder, test_fraction=0.0)
    monkeypatch.setenv(WORKERS_ENV, "1")  # met in a worker process, sent back as the same error
    streamed = load_data(folder, test_fraction=0.0, memory_budget_mb=0.01)  # the headers pass: no pixel is read yet
    with pytest.raises(vaezoo.DataError) as error:
        vaezoo.train(vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(1, 12, 12)), streamed, epochs=1,
                     batch_size=8, progress=False)
    assert str(error.value) == str(in_memory.value) and "\n" not in str(error.value)
    assert str(error.value).startswith(f"cannot read image {bad}")


def test_the_budget_comes_from_the_argument_then_the_variable_then_memory(vectors, monkeypatch) -> None:
    assert memory_budget(2) == (2 * 2**20, "memory_budget_mb")
    assert memory_budget() == (int(memory_bytes() * DEFAULT_BUDGET_FRACTION), "a quarter of this machine's memory")
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "0.5")
    assert memory_budget() == (2**19, f"${MEMORY_BUDGET_ENV}")
    assert memory_budget(3)[0] == 3 * 2**20  # the argument wins
    assert isinstance(load_data(vectors).train, StreamingData)  # 750 KiB of samples, over the variable's 512 KiB
    assert type(load_data(vectors, memory_budget_mb=1).train) is TensorData
    for bad in (0, -1, float("nan"), float("inf"), True, "1"):
        with pytest.raises(vaezoo.ConfigError, match=r"memory_budget_mb=.* must be a number of MiB > 0"):
            load_data("digits", memory_budget_mb=bad)
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "lots")
    with pytest.raises(vaezoo.ConfigError, match=r"\$VAEZOO_MEMORY_BUDGET_MB='lots' must be a number of MiB > 0"):
        load_data(vectors)
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "1")
    monkeypatch.setenv(WORKERS_ENV, "-2")
    with pytest.raises(vaezoo.ConfigError, match=r"\$VAEZOO_DATA_WORKERS='-2' must be a whole number"):
        vaezoo.train(vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(64,)),
                     load_data(vectors, memory_budget_mb=0.1), epochs=1, progress=False)


def test_a_sparse_npy_is_never_streamed(tmp_path, caplog) -> None:
    """A file of holes is a bomb of zeros (tests/robustness_cases.py: DATA_BOMBS): the in-memory path judges it."""
    path = tmp_path / "holes.npy"
    with path.open("wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": (2**20, 4)})
    os.truncate(path, path.stat().st_size + 2**24)  # 16 MiB that take no disk
    with caplog.at_level(logging.INFO, logger="vaezoo.data"):
        splits = load_data(path, memory_budget_mb=1)
    assert type(splits.train) is TensorData and float(splits.train.x.abs().max()) == 0.0
    assert "not streaming it: only" in caplog.text and "a sparse file, mostly holes" in caplog.text


def _ddp_worker(rank: int, world_size: int, port: int, data: str, out: str) -> None:
    os.environ.update(rank_env(rank, world_size, port), **{WORKERS_ENV: "0"})
    torch.set_num_threads(1)
    for name, budget in (("memory", None), ("streamed", TINY_BUDGET_MB)):
        torch.manual_seed(0)
        model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(64,))
        vaezoo.train(model, load_data(data, memory_budget_mb=budget), epochs=2, batch_size=64, lr=3e-3, progress=False)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/{name}{rank}.safetensors")
    exit_leaving_process_group(0)  # not a plain return: gloo's threads could abort the rank at exit (see there)


@pytest.mark.slow
def test_under_ddp_each_rank_trains_on_streamed_data_exactly_as_on_tensors(vectors, tmp_path) -> None:
    """Two gloo ranks: each rank's slice of every global batch, the averaged gradients and the weights agree."""
    torch.multiprocessing.spawn(_ddp_worker, args=(2, free_port(), str(vectors), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        memory, streamed = (load_file(tmp_path / f"{name}{rank}.safetensors") for name in ("memory", "streamed"))
        assert all(torch.equal(memory[k], streamed[k]) for k in memory), f"rank {rank}"
    rank0, rank1 = load_file(tmp_path / "streamed0.safetensors"), load_file(tmp_path / "streamed1.safetensors")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
