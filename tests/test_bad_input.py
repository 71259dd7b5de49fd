"""Every bad input gets a clear answer (issue 14), driven through the public API.

One test (or one parametrised group) per row of the issue's table. A refused input must raise
``ValueError`` whose message names the offending value; an accepted spelling of a number (NumPy
scalar, 0-d tensor, integral float) must give exactly what the plain-Python call gives. The last
group checks that the answers that were already clear stay clear, now through the one helper
(:mod:`slamags_core.validation`).
"""
import dataclasses
import gc
import os
import re
import warnings

import numpy as np
import pytest
import torch

from slamags_core import sweep as sweep_module
from slamags_core.__main__ import main as cli
from slamags_core.augment import Augmenter
from slamags_core.bags import BagSet, PoolSource, SyntheticSource, build_bags, n_witnesses
from slamags_core.checkpoint import load_encoder
from slamags_core.config import BagConfig, CellConfig, MILConfig, PretrainConfig, get_preset
from slamags_core.embed import embed_images, linear_probe
from slamags_core.encoders import build_encoder
from slamags_core.losses import nt_xent, similarity_loss, supcon
from slamags_core.metrics import bag_metrics, retrieval_metrics, topk_hits
from slamags_core.mil import build_mil, train_mil
from slamags_core.batching import batch_shares
from slamags_core.pretrain import pretrain
from slamags_core.realdata import load_bloodmnist_npz, load_bone_marrow_folder
from slamags_core.surgery import combine
from slamags_core.sweep import run_sweep
from slamags_core.synthetic import render_cells, sample_stain
from slamags_core.utils import set_seed
from slamags_core.viz import mosaic

# Spellings of the number 0.5 / 4 that must be accepted and behave exactly like the plain one.
HALF = [np.float32(0.5), np.float64(0.5), np.array(0.5), torch.tensor(0.5),
        torch.tensor(0.5, dtype=torch.float64)]
FOUR = [4.0, np.int64(4), np.int32(4), np.float32(4.0), np.array(4), torch.tensor(4)]


def _names(value, err: pytest.ExceptionInfo) -> None:
    """The message names the offending value (its repr)."""
    assert repr(value) in str(err.value), f"{value!r} not named in: {err.value}"


def _pool(n_lyt=400, n_bla=60, size=8, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n_lyt + n_bla, size, size, 3), dtype=np.uint8)
    return PoolSource(images, np.array(["LYT"] * n_lyt + ["BLA"] * n_bla), name="fixture")


BAGS = BagConfig(bag_size=20, witness_rate=0.25, n_train=6, n_val=2, n_test=4, seed=3)


def _same_bagset(a: BagSet, b: BagSet) -> None:
    for f in dataclasses.fields(BagSet):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y and type(x) is type(y), f.name


def _views(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 5, generator=g).to(dtype), torch.randn(6, 5, generator=g).to(dtype)


# ----------------------------------------------------------------------------------------------
# Row 1: integer embeddings -> "floating tensors expected, got int64"
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", [nt_xent, similarity_loss])
def test_integer_embeddings_are_refused_by_name(loss):
    z1, z2 = (torch.arange(12).reshape(4, 3) for _ in range(2))
    with pytest.raises(ValueError, match=r"z1 must be a floating-point tensor .*got torch\.int64"):
        loss(z1, z2)
    with pytest.raises(ValueError, match=r"z2 must be a floating-point tensor .*got torch\.int64"):
        loss(z1.float(), z2)
    with pytest.raises(ValueError, match=r"z1 must be a torch tensor, got ndarray"):
        loss(z1.numpy(), z2)


def test_supcon_integer_embeddings_are_refused_by_name():
    with pytest.raises(ValueError, match=r"z must be a floating-point tensor .*got torch\.int32"):
        supcon(torch.ones(4, 3, dtype=torch.int32), torch.tensor([0, 0, 1, 1]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_every_floating_dtype_still_works(dtype):
    z1, z2 = _views(dtype=dtype)
    assert torch.isfinite(nt_xent(z1, z2)) and torch.isfinite(similarity_loss(z1, z2))


# ----------------------------------------------------------------------------------------------
# Row 2: a bool is not a number here
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag", [True, False, np.bool_(True), torch.tensor(True)])
def test_bool_temperature_is_refused(flag):
    z1, z2 = _views()
    for call in (lambda: nt_xent(z1, z2, temperature=flag),
                 lambda: similarity_loss(z1, z2, temperature=flag),
                 lambda: supcon(torch.cat([z1, z2]), torch.arange(12) % 2, temperature=flag)):
        with pytest.raises(ValueError, match=r"temperature .*a bool is not a number") as err:
            call()
        _names(flag, err)


@pytest.mark.parametrize("field", ["witness_rate", "bag_size", "n_train", "positive_fraction",
                                   "seed"])
def test_bool_bag_settings_are_refused(field):
    with pytest.raises(ValueError, match=f"{field} .*got True \\(a bool is not a number here\\)"):
        build_bags(_pool(), dataclasses.replace(BAGS, **{field: True}))


def test_bool_witness_rate_in_n_witnesses():
    with pytest.raises(ValueError, match=r"witness_rate .*got True \(a bool"):
        n_witnesses(1000, True)


# ----------------------------------------------------------------------------------------------
# Row 3: NumPy scalars and 0-d tensors are numbers
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("t", HALF)
def test_numpy_and_0d_tensor_temperatures_equal_the_float(t):
    z1, z2 = _views()
    labels = torch.arange(12) % 3
    assert torch.equal(nt_xent(z1, z2, temperature=t), nt_xent(z1, z2, temperature=0.5))
    assert torch.equal(similarity_loss(z1, z2, t), similarity_loss(z1, z2, 0.5))
    assert torch.equal(supcon(torch.cat([z1, z2]), labels, t),
                       supcon(torch.cat([z1, z2]), labels, 0.5))


@pytest.mark.parametrize("wr", [np.float32(0.25), np.float64(0.25), np.array(0.25),
                                torch.tensor(0.25)])
def test_numpy_and_0d_tensor_witness_rates_equal_the_float(wr):
    plain = build_bags(_pool(), BAGS)
    _same_bagset(build_bags(_pool(), dataclasses.replace(BAGS, witness_rate=wr)), plain)
    assert n_witnesses(20, wr) == n_witnesses(20, 0.25) == 5


# ----------------------------------------------------------------------------------------------
# Row 4: bag_size=8.0 works as 8 (was an AxisError deep in NumPy); 8.5 is refused
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [20.0, np.int64(20), np.float32(20.0), torch.tensor(20)])
def test_integral_bag_size_equals_the_int(size):
    _same_bagset(build_bags(_pool(), dataclasses.replace(BAGS, bag_size=size)),
                 build_bags(_pool(), BAGS))


@pytest.mark.parametrize("field,value", [("bag_size", 8.5), ("bag_size", "8"),
                                         ("n_test", 1.5), ("seed", -1), ("bag_size", np.nan)])
def test_non_integral_counts_are_refused(field, value):
    with pytest.raises(ValueError, match=f"{field} must be an integer") as err:
        build_bags(_pool(), dataclasses.replace(BAGS, **{field: value}))
    _names(value, err)


# ----------------------------------------------------------------------------------------------
# Row 5: retrieval k=4.0 works as 4 (was an IndexError); 4.5 is refused
# ----------------------------------------------------------------------------------------------

def _retrieval_inputs(seed=0):
    rng = np.random.default_rng(seed)
    att = [rng.random(10) for _ in range(4)]
    lab = [np.array([1, 1] + [0] * 8), np.zeros(10, int), np.array([0] * 7 + [1] * 3),
           np.array([1] + [0] * 9)]
    return att, lab, np.array([1, 0, 1, 1])


@pytest.mark.parametrize("k", FOUR)
def test_integral_k_equals_the_int(k):
    att, lab, y = _retrieval_inputs()
    assert retrieval_metrics(att, lab, y, k=k) == retrieval_metrics(att, lab, y, k=4)
    assert topk_hits(att[0], lab[0], k) == topk_hits(att[0], lab[0], 4)


@pytest.mark.parametrize("k", [4.5, True, "4", float("nan"), 0])
def test_bad_k_is_refused_by_name(k):
    att, lab, y = _retrieval_inputs()
    with pytest.raises(ValueError, match="k .*must be an integer") as err:
        retrieval_metrics(att, lab, y, k=k)
    _names(k, err)
    with pytest.raises(ValueError, match=r"k .*must be an integer in \[1, 10\]") as err:
        topk_hits(att[0], lab[0], k)
    _names(k, err)


@pytest.mark.parametrize("frac", HALF)
def test_numpy_topk_fraction_equals_the_float(frac):
    att, lab, y = _retrieval_inputs()
    assert retrieval_metrics(att, lab, y, topk_fraction=frac) == \
        retrieval_metrics(att, lab, y, topk_fraction=0.5)


# ----------------------------------------------------------------------------------------------
# Row 6: a truncated or corrupt BloodMNIST archive
# ----------------------------------------------------------------------------------------------

def _bloodmnist(path, compressed=False, labels=None):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 8, (30, 1)) if labels is None else labels
    arrays = {"train_images": rng.integers(0, 256, (len(y), 28, 28, 3), dtype=np.uint8),
              "train_labels": y}
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return arrays


def _open_handles(path) -> list[str]:
    fds = "/proc/self/fd"
    out = []
    for fd in os.listdir(fds):
        try:
            if os.readlink(os.path.join(fds, fd)) == str(path):
                out.append(fd)
        except OSError:
            pass
    return out


def _damaged(data: bytes, how: str) -> bytes:
    if how.startswith("cut"):
        return data[:int(len(data) * float(how[3:]))]
    b = bytearray(data)  # overwrite 16 bytes in the middle of the image array
    b[len(b) // 2:len(b) // 2 + 16] = bytes(range(16))
    return bytes(b)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("how", ["cut0.0", "cut0.01", "cut0.5", "cut0.99", "corrupt"])
def test_damaged_npz_names_the_file_and_closes_it(tmp_path, compressed, how):
    full = tmp_path / "bloodmnist.npz"
    _bloodmnist(full, compressed)
    bad = tmp_path / "download.npz"
    bad.write_bytes(_damaged(full.read_bytes(), how))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="not a complete .npz archive") as err:
            load_bloodmnist_npz(bad)
        gc.collect()  # an unclosed handle would warn when collected
    assert str(bad) in str(err.value)
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], \
        [str(w.message) for w in caught]
    if os.path.isdir("/proc/self/fd"):
        assert not _open_handles(bad)


@pytest.mark.parametrize("bad", [[4.7], [-1], [8], [np.nan], [0.5, 3.0]])
def test_non_integer_labels_are_refused(tmp_path, bad):
    labels = np.array([0, 1, 2] + bad, dtype=np.float64).reshape(-1, 1)
    _bloodmnist(tmp_path / "b.npz", labels=labels)
    with pytest.raises(ValueError, match=r"train_labels outside .*integers 0-7") as err:
        load_bloodmnist_npz(tmp_path / "b.npz", "train")
    assert str(tmp_path / "b.npz") in str(err.value)
    first_bad = [v for v in bad if v not in range(8)][0]
    assert repr(first_bad) in str(err.value) or str(first_bad) in str(err.value)


def test_bool_or_text_labels_are_refused(tmp_path):
    _bloodmnist(tmp_path / "b.npz", labels=np.array([[True], [False]]))
    with pytest.raises(ValueError, match="must be integers 0-7, got dtype bool"):
        load_bloodmnist_npz(tmp_path / "b.npz", "train")


def test_integral_float_labels_equal_int_labels(tmp_path):
    y = np.arange(24).reshape(-1, 1) % 8
    _bloodmnist(tmp_path / "int.npz", labels=y)
    _bloodmnist(tmp_path / "float.npz", labels=y.astype(np.float32))
    a = load_bloodmnist_npz(tmp_path / "int.npz", "train")
    b = load_bloodmnist_npz(tmp_path / "float.npz", "train")
    np.testing.assert_array_equal(a.cell_types, b.cell_types)
    np.testing.assert_array_equal(a.images, b.images)


# ----------------------------------------------------------------------------------------------
# Rows 7-8 (done on main in checkpoint.py): load_encoder on foreign or broken files
# ----------------------------------------------------------------------------------------------

SMALL = PretrainConfig(encoder="tiny_cnn", width=4, crop_size=12, proj_dim=8, steps=1,
                       batch_size=16, lr=0.05, warmup_steps=0, monitor_size=16, seed=1)


def test_plain_state_dict_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(build_encoder(SMALL).state_dict(), path)
    with pytest.raises(ValueError, match="not a checkpoint of this project") as err:
        load_encoder(path)
    assert str(path) in str(err.value) and "expected the keys" in str(err.value)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("payload", [b"", b"garbage", b"\x80\x04K\x01."])
def test_garbage_checkpoint_never_suggests_unpickling(tmp_path, payload):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(payload)
    with pytest.raises(ValueError) as err:
        load_encoder(path)
    assert str(path) in str(err.value)
    advice = r"weights_only\s*=\s*False|allow_pickle\s*=\s*True|pickle\.load"
    assert not re.search(advice, str(err.value)), err.value


# ----------------------------------------------------------------------------------------------
# Row 9: a sweep grid with a witness rate that gives 0 witnesses fails before any work
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def no_work(monkeypatch):
    """Any attempt to build bags or pretrain fails the test."""
    def fail(*args, **kwargs):
        raise AssertionError("the sweep started working before validating its grid")
    monkeypatch.setattr(sweep_module, "get_bags", fail)
    monkeypatch.setattr(sweep_module, "get_pretrained", fail)


def test_sweep_grid_is_validated_before_any_work(tmp_path, no_work):
    out = tmp_path / "sweep"
    with pytest.raises(ValueError, match=r"witness_rate 0\.01 x bag_size 40 .* rounds to 0 "
                                         r"witnesses; use bag_size >= 50"):
        run_sweep(get_preset("smoke"), out, witness_rates=[0.1, 0.05, 0.01], progress=False)
    assert not out.exists()  # nothing written, not even the folder


def test_sweep_cli_refuses_the_grid_before_any_work(tmp_path, no_work):
    out = tmp_path / "sweep"
    with pytest.raises(ValueError, match=r"witness_rate 0\.01 x bag_size 40 .*bag_size >= 50"):
        cli(["sweep", "--preset", "smoke", "--witness-rates", "0.1", "0.01", "--out", str(out),
             "--no-progress"])
    assert not out.exists()


@pytest.mark.parametrize("kw,name,value", [
    (dict(witness_rates=[0.1, True]), r"witness_rates\[1\]", True),
    (dict(witness_rates=[0.1, "0.05"]), r"witness_rates\[1\]", "0.05"),
    (dict(witness_rates=[float("nan")]), r"witness_rates\[0\]", float("nan")),
    (dict(seeds=[0, 2.5]), r"seeds\[1\]", 2.5),
    (dict(seeds=[True]), r"seeds\[0\]", True),
    (dict(seeds=[-1]), r"seeds\[0\]", -1),
])
def test_sweep_grid_numbers_are_refused_by_name(tmp_path, no_work, kw, name, value):
    with pytest.raises(ValueError, match=name) as err:
        run_sweep(get_preset("smoke"), tmp_path / "sweep", progress=False, **kw)
    _names(value, err)


@pytest.mark.parametrize("wr,size,need", [(0.01, 40, 50), (0.005, 99, 100), (0.3, 1, 2),
                                          (0.07, 7, 8), (0.001, 499, 500)])
def test_smallest_working_bag_size_is_exact(wr, size, need):
    with pytest.raises(ValueError, match=f"bag_size >= {need} for this witness rate"):
        n_witnesses(size, wr)
    with pytest.raises(ValueError, match=f"bag_size {need - 1} "):
        n_witnesses(need - 1, wr)  # need is the smallest size that works
    assert n_witnesses(need, wr) == 1


# ----------------------------------------------------------------------------------------------
# NaN / inf inside embeddings: NaN out, as PyTorch's losses; documented
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_embeddings_give_nan_as_documented(bad):
    z1, z2 = _views()
    z1[2, 3] = bad
    assert torch.isnan(nt_xent(z1, z2)) and torch.isnan(similarity_loss(z1, z2))
    assert torch.isnan(supcon(torch.cat([z1, z2]), torch.arange(12) % 2))
    for loss in (nt_xent, similarity_loss, supcon):
        assert "NaN" in loss.__doc__ and "NonFiniteLossError" in loss.__doc__


# ----------------------------------------------------------------------------------------------
# The clear answers that were already there stay clear, now through one helper
# ----------------------------------------------------------------------------------------------

_IMGS = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
_ENCODER = build_encoder(SMALL)
_MILBAGS = [(torch.randn(5, 3, generator=torch.Generator().manual_seed(i)), i % 2)
            for i in range(4)]


def _pretrain(**changes):
    return pretrain("simclr", _IMGS, _IMGS, dataclasses.replace(SMALL, **changes), progress=False)


BAD_NUMBERS = [
    # (call, parameter named in the message, offending value)
    (lambda v: n_witnesses(v, 0.1), "bag_size", 0),
    (lambda v: n_witnesses(100, v), "witness_rate", 1.5),
    (lambda v: SyntheticSource(CellConfig(image_size=v)), "image_size", 40.5),
    (lambda v: SyntheticSource(CellConfig(difficulty=v)), "difficulty", True),
    (lambda v: render_cells(["LYT"], image_size=v, difficulty=0.2,
                            rng=np.random.default_rng(0)), "image_size", 16),
    (lambda v: sample_stain(np.random.default_rng(0), v), "n", -1),
    (lambda v: build_bags(_pool(), dataclasses.replace(BAGS, positive_fraction=v)),
     "positive_fraction", 1.2),
    (lambda v: build_bags(_pool(), BAGS).bag_cells(v), "bag id", 1.5),
    (lambda v: bag_metrics([0, 1], [0.2, 0.8], threshold=v), "threshold", 1.0),
    (lambda v: retrieval_metrics(*_retrieval_inputs(), topk_fraction=v), "topk_fraction", 0),
    (lambda v: load_bloodmnist_npz("missing.npz", image_size=v), "image_size", 7),
    (lambda v: load_bone_marrow_folder("missing", max_per_class=v), "max_per_class", 0),
    (lambda v: load_bone_marrow_folder("missing", seed=v), "seed", 0.5),
    (lambda v: Augmenter(v), "crop_size", 0),
    (lambda v: Augmenter(12, p_flip=v), "p_flip", 1.5),
    (lambda v: Augmenter(12, jitter=v), "jitter", True),
    (lambda v: build_encoder(dataclasses.replace(SMALL, width=v)), "width", 0),
    (lambda v: build_encoder(dataclasses.replace(SMALL, proj_dim=v)), "proj_dim", 2.5),
    (lambda v: embed_images(_ENCODER, _IMGS, SMALL, batch_size=v), "batch_size", 0),
    (lambda v: linear_probe(np.zeros((4, 2)), [0, 1, 0, 1], np.zeros((4, 2)), [0, 1, 0, 1],
                            C=v), "C", 0),
    (lambda v: build_mil("abmil", v, MILConfig()), "in_dim", 0),
    (lambda v: build_mil("abmil", 3, MILConfig(hidden_dim=v)), "hidden_dim", 2.5),
    (lambda v: build_mil("prototype", 3, MILConfig(n_prototypes=v)), "n_prototypes", 0),
    (lambda v: train_mil("abmil", _MILBAGS, _MILBAGS, MILConfig(epochs=v)), "epochs", 0),
    (lambda v: train_mil("abmil", _MILBAGS, _MILBAGS, MILConfig(lr=v)), "lr", True),
    (lambda v: train_mil("abmil", _MILBAGS, _MILBAGS, MILConfig(patience=v)), "patience", 1.5),
    (lambda v: _pretrain(lr=v), "lr", float("nan")),
    (lambda v: _pretrain(steps=v), "steps", 2.5),
    (lambda v: _pretrain(warmup_steps=v), "warmup_steps", 2),
    (lambda v: _pretrain(checkpoint_every=v), "checkpoint_every", 0),
    (lambda v: _pretrain(log_every=v), "log_every", 1.5),
    (lambda v: _pretrain(temperature=v), "temperature", 0),
    (lambda v: _pretrain(monitor_size=v), "monitor_size", 1),
    (lambda v: _pretrain(seed=v), "seed", True),
    (lambda v: batch_shares(10, 10, v), "batch_size", 2),
    (lambda v: batch_shares(10, 10, 8, world_size=v), "world_size", 0),
    (lambda v: combine([torch.ones(3), torch.ones(3)], "ags", eps=v), "eps", -1.0),
    (lambda v: combine([torch.ones(3), torch.ones(3)], "ags", sizes=[v, 1.5]), "sizes[0]", 1.5),
    (lambda v: mosaic(_IMGS, ncols=v), "ncols", 0),
    (lambda v: mosaic(_IMGS, ncols=2, pad=v), "pad", True),
    (lambda v: set_seed(v), "seed", 2.5),
]


@pytest.mark.parametrize("call,name,value", BAD_NUMBERS,
                         ids=[f"{i}-{n}" for i, (_, n, _) in enumerate(BAD_NUMBERS)])
def test_bad_numbers_everywhere_name_parameter_and_value(call, name, value):
    with pytest.raises(ValueError, match=re.escape(name)) as err:
        call(value)
    _names(value, err)


@pytest.mark.filterwarnings("ignore::slamags_core.monitor.CollapseWarning")
def test_integral_float_configs_equal_plain_ones():
    """Configs normalise their numbers: 1.0 steps / np.int64 seeds train the same model."""
    plain = _pretrain()
    spelled = _pretrain(steps=1.0, batch_size=np.int64(16), seed=torch.tensor(1),
                        lr=np.float64(0.05), temperature=torch.tensor(0.07, dtype=torch.float64))
    for a, b in zip(plain.encoder.state_dict().values(), spelled.encoder.state_dict().values()):
        assert torch.equal(a, b)
    cfg = MILConfig(epochs=3, hidden_dim=4, n_prototypes=2)
    m1, h1 = train_mil("prototype", _MILBAGS, _MILBAGS, cfg)
    m2, h2 = train_mil("prototype", _MILBAGS, _MILBAGS,
                       dataclasses.replace(cfg, epochs=3.0, hidden_dim=np.int64(4),
                                           n_prototypes=torch.tensor(2), seed=np.uint8(0)))
    assert [r["train_loss"] for r in h1] == [r["train_loss"] for r in h2]
