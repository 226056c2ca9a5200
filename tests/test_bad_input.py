"""A corpus of malformed inputs, each run through the CLI: non-zero exit, one-line error naming the file,
no traceback, no output file (and no temporary file) left behind. Inputs that are well-formed but claim
huge sizes (a lying array header, an absurd label, a decompression-bomb image, hours of audio) also run in
a subprocess whose time and peak memory are measured."""

import io
import json
import struct
import zipfile
import zlib

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import TINY, run_measured


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """Consistent files from a tiny run: noise, model, scores, partition, sensitivity, holdout, and shard 0 of 2
    of the scores and of the sensitivity (``denoise merge``'s inputs)."""
    from denoise.cli import stages
    from denoise.cli.data.noise import inject_noise
    from denoise.cli.model_commands import train
    from denoise.core.training import Recipe

    folder = tmp_path_factory.mktemp("good")
    data = f"npz:{TINY}"
    files = {name: folder / name for name in ("noise.npz", "model.safetensors", "scores.npz", "partition.npz",
                                               "sensitivity.npz", "holdout.npz")}
    inject_noise(data, "symmetric", 0.3, 0, files["noise.npz"])
    train(data, "mlp", files["model.safetensors"], Recipe(epochs=2), noise=files["noise.npz"], device="cpu")
    stages.attribute(files["model.safetensors"], data, files["scores.npz"], noise=files["noise.npz"], device="cpu")
    stages.partition(files["scores.npz"], files["partition.npz"])
    stages.sensitivity(files["model.safetensors"], data, files["partition.npz"], files["sensitivity.npz"],
                       noise=files["noise.npz"], device="cpu")
    stages.hold_out(files["partition.npz"], files["holdout.npz"], fraction=0.2)
    stages.attribute(files["model.safetensors"], data, folder / "scores-0.npz", noise=files["noise.npz"],
                     device="cpu", shard="0/2")
    stages.sensitivity(files["model.safetensors"], data, files["partition.npz"], folder / "sensitivity-0.npz",
                       noise=files["noise.npz"], device="cpu", shard="0/2")
    return folder


def _arrays(path):
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _rewrite_npz(source, target, **changes):
    arrays = {**_arrays(source), **changes}
    np.savez(target, **{k: v for k, v in arrays.items() if v is not None})
    return target


def _rewrite_safetensors(source, target, change, change_metadata=lambda tensors, metadata: None):
    with safe_open(source, "pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        metadata = handle.metadata()
    change(tensors)
    change_metadata(tensors, metadata)
    save_file(tensors, target, metadata=metadata)
    return target


def _object_npz(target):
    np.savez(target, x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    return target


def _data_npz(target, x, y, **extra):
    np.savez(target, x=x, y=y, **extra)
    return f"npz:{target}"


def _fsdd_with_bad_wav(folder):
    recordings = folder / "recordings"
    recordings.mkdir()
    (recordings / "3_jackson_7.wav").write_bytes(b"RIFF\x00\x00garbage, not audio")
    return f"fsdd:{recordings}"


def _mnist_truncated(folder):
    root = folder / "mnist"
    root.mkdir()
    header = np.array([0x00000803, 10, 28, 28], ">u4").tobytes()
    (root / "train-images-idx3-ubyte").write_bytes(header + bytes(100))
    (root / "train-labels-idx1-ubyte").write_bytes(np.array([0x00000801, 10], ">u4").tobytes() + bytes(10))
    return f"mnist:{root}"


def _truncated(source, target, keep=0.5):
    raw = source.read_bytes()
    target.write_bytes(raw[: int(len(raw) * keep)])
    return target


# Each case: (id, build(good, tmp) -> argv using OUT for the output path, what the message must mention)
CASES = [
    ("missing model", lambda g, t: ["evaluate", "--model", t / "nope.safetensors", "--data", f"npz:{TINY}"],
     "nope.safetensors"),
    ("model is a directory", lambda g, t: ["attribute", "--model", t, "--data", f"npz:{TINY}", "--out", "OUT"],
     "not a regular file"),
    ("garbage safetensors", lambda g, t: ["attribute", "--model", _garbage(t / "g.safetensors"), "--data",
                                          f"npz:{TINY}", "--out", "OUT"], "g.safetensors"),
    ("truncated safetensors", lambda g, t: ["finetune", "--model", _truncated(g / "model.safetensors",
                                            t / "cut.safetensors"), "--data", f"npz:{TINY}", "--partition",
                                            g / "partition.npz", "--out", "OUT"], "cut.safetensors"),
    ("missing tensor", lambda g, t: ["evaluate", "--model", _rewrite_safetensors(
        g / "model.safetensors", t / "m.safetensors", lambda d: d.pop("head.weight")), "--data", f"npz:{TINY}"],
     "head.weight"),
    ("extra tensor", lambda g, t: ["evaluate", "--model", _rewrite_safetensors(
        g / "model.safetensors", t / "m.safetensors", lambda d: d.update(extra=torch.zeros(2))), "--data",
        f"npz:{TINY}"], "extra"),
    ("wrong dtype", lambda g, t: ["evaluate", "--model", _rewrite_safetensors(
        g / "model.safetensors", t / "m.safetensors", lambda d: d.update({"head.weight": d["head.weight"].double()})),
        "--data", f"npz:{TINY}"], "dtype"),
    ("wrong shape", lambda g, t: ["evaluate", "--model", _rewrite_safetensors(
        g / "model.safetensors", t / "m.safetensors", lambda d: d.update({"head.bias": torch.zeros(7)})),
        "--data", f"npz:{TINY}"], "shape"),
    ("NaN weight", lambda g, t: ["evaluate", "--model", _rewrite_safetensors(
        g / "model.safetensors", t / "m.safetensors", lambda d: d["head.bias"].fill_(float("nan"))),
        "--data", f"npz:{TINY}"], "head.bias"),
    ("plain state dict", lambda g, t: ["evaluate", "--model", _plain(t / "plain.safetensors"), "--data",
                                       f"npz:{TINY}"], "denoise import"),
    ("NaN loss in scores", lambda g, t: ["partition", "--scores", _rewrite_npz(
        g / "scores.npz", t / "s.npz", loss=np.full(150, np.nan)), "--out", "OUT"], "NaN"),
    ("inf attribution", lambda g, t: ["partition", "--scores", _rewrite_npz(
        g / "scores.npz", t / "s.npz", attribution=np.full((150, 128), np.inf, np.float32)), "--out", "OUT"],
     "attribution"),
    ("object-array scores", lambda g, t: ["partition", "--scores", _object_npz(t / "o.npz"), "--out", "OUT"],
     "object"),
    ("object-array data", lambda g, t: ["train", "--data", f"npz:{_object_npz(t / 'o.npz')}", "--arch", "mlp",
                                        "--epochs", "1", "--out", "OUT"], "o.npz"),
    ("mismatched N in scores", lambda g, t: ["partition", "--scores", _rewrite_npz(
        g / "scores.npz", t / "s.npz", loss=np.zeros(10, np.float32)), "--out", "OUT"], "length"),
    ("duplicate indices", lambda g, t: ["partition", "--scores", _rewrite_npz(
        g / "scores.npz", t / "s.npz", index=np.zeros(150, np.int64)), "--out", "OUT"], "duplicate"),
    # files of an earlier format: refused, naming the version that wrote them and the command that rewrites them
    ("scores of an earlier format", lambda g, t: ["partition", "--scores", _rewrite_npz(
        g / "scores.npz", t / "s.npz", input_high_pass=None), "--out", "OUT"], "run `denoise attribute` again"),
    ("partition of an earlier format", lambda g, t: ["finetune", "--model", g / "model.safetensors", "--data",
                                                     f"npz:{TINY}", "--partition", _rewrite_npz(
        g / "partition.npz", t / "p.npz", suggested=None), "--out", "OUT"], "earlier format (written by denoise"),
    ("wrong kind of npz", lambda g, t: ["partition", "--scores", g / "sensitivity.npz", "--out", "OUT"],
     "not a scores file"),
    ("text file as npz", lambda g, t: ["partition", "--scores", _text(t / "s.npz"), "--out", "OUT"], "s.npz"),
    ("truncated npz", lambda g, t: ["partition", "--scores", _truncated(g / "scores.npz", t / "cut.npz", 0.7),
                                    "--out", "OUT"], "cut.npz"),
    ("npz with a malformed array header", lambda g, t: ["partition", "--scores", _bad_header(g / "scores.npz",
                                                        t / "h.npz"), "--out", "OUT"], "h.npz"),
    ("directory as scores", lambda g, t: ["partition", "--scores", t, "--out", "OUT"], "not a regular file"),
    ("partition of other samples", lambda g, t: ["finetune", "--model", g / "model.safetensors", "--data",
                                                 f"npz:{TINY}", "--partition", _rewrite_npz(
        g / "partition.npz", t / "p.npz", **_cut(g / "partition.npz", 100)), "--out", "OUT"], "p.npz"),
    ("labels out of range for the model", lambda g, t: ["evaluate", "--model", g / "model.safetensors", "--data",
        _data_npz(t / "d.npz", np.zeros((6, 1, 8, 8), np.float32), np.array([0, 1, 2, 3, 4, 5]))], "classes"),
    # labels {0, 2} of a model made when npz: classes were range(max + 1); now renumbered, label 1 means class 2
    ("classes renumbered since the model", lambda g, t: ["evaluate", "--model", _rewrite_record(
        g / "model.safetensors", t / "m.safetensors", lambda r: r.update(classes=["0", "1", "2"])), "--data",
        _data_npz(t / "d.npz", np.zeros((6, 1, 8, 8), np.float32), np.array([0, 2, 0, 2, 0, 2]))],
     "d.npz: has 2 classes, the model 3: label 1 is '2' here but '1' in the model"),
    ("negative labels", lambda g, t: ["train", "--data", _data_npz(t / "d.npz", np.zeros((4, 3), np.float32),
                                      np.array([0, -1, 1, 0])), "--arch", "mlp", "--epochs", "1", "--out", "OUT"],
     "negative"),
    ("noise labels out of range", lambda g, t: ["train", "--data", f"npz:{TINY}", "--noise", _rewrite_npz(
        g / "noise.npz", t / "n.npz", labels=np.full(150, 9)), "--arch", "mlp", "--epochs", "1", "--out", "OUT"],
     "out of range"),
    ("noise for another data set", lambda g, t: ["train", "--data", "digits", "--noise", g / "noise.npz", "--arch",
                                                 "mlp", "--epochs", "1", "--out", "OUT"], "noise.npz"),
    ("empty data set", lambda g, t: ["train", "--data", _data_npz(t / "d.npz", np.zeros((0, 3), np.float32),
                                     np.zeros(0, np.int64)), "--arch", "mlp", "--epochs", "1", "--out", "OUT"],
     "no samples"),
    ("one-class data", lambda g, t: ["train", "--data", _data_npz(t / "d.npz", np.ones((8, 3), np.float32),
                                     np.zeros(8, np.int64)), "--arch", "mlp", "--epochs", "1", "--out", "OUT"],
     "class"),
    ("input shape differs from the model", lambda g, t: ["evaluate", "--model", g / "model.safetensors", "--data",
        _data_npz(t / "d.npz", np.zeros((4, 1, 4, 4), np.float32), np.array([0, 1, 2, 0]))], "shape"),
    ("data npz without y", lambda g, t: ["train", "--data", f"npz:{_no_y(t / 'd.npz')}", "--arch", "mlp",
                                         "--epochs", "1", "--out", "OUT"], "'y'"),
    ("unknown layer", lambda g, t: ["attribute", "--model", g / "model.safetensors", "--data", f"npz:{TINY}",
                                    "--layer", "features.99", "--out", "OUT"], "features.99"),
    ("unknown architecture", lambda g, t: ["train", "--data", f"npz:{TINY}", "--arch", "resnet9000", "--epochs", "1",
                                           "--out", "OUT"], "resnet9000"),
    ("ratio above 1", lambda g, t: ["prune", "--model", g / "model.safetensors", "--sensitivity",
                                    g / "sensitivity.npz", "--ratio", "1.5", "--out", "OUT"], "--ratio"),
    ("ratio of 0", lambda g, t: ["prune", "--model", g / "model.safetensors", "--sensitivity",
                                 g / "sensitivity.npz", "--ratio", "0", "--out", "OUT"], "--ratio"),
    ("shrink of 0", lambda g, t: ["finetune", "--model", g / "model.safetensors", "--data", f"npz:{TINY}", "--noise",
                                  g / "noise.npz", "--partition", g / "partition.npz", "--shrink", "0",
                                  "--out", "OUT"], "--shrink"),
    ("sensitivity for another model", lambda g, t: ["prune", "--model", _rewrite_safetensors(
        g / "model.safetensors", t / "other.safetensors", lambda d: d["head.bias"].add_(1)), "--sensitivity",
        g / "sensitivity.npz", "--ratio", "0.1", "--out", "OUT"], "another model"),
    ("unreadable wav", lambda g, t: ["train", "--data", _fsdd_with_bad_wav(t), "--arch", "kws", "--epochs", "1",
                                     "--out", "OUT"], "3_jackson_7.wav"),
    ("truncated IDX file", lambda g, t: ["train", "--data", _mnist_truncated(t), "--arch", "cnn", "--epochs", "1",
                                         "--out", "OUT"], "train-images-idx3-ubyte"),
    ("missing data directory", lambda g, t: ["train", "--data", f"fsdd:{t / 'nowhere'}", "--arch", "kws",
                                             "--epochs", "1", "--out", "OUT"], "nowhere"),
    ("unknown data spec", lambda g, t: ["train", "--data", "imagenet:/x", "--arch", "mlp", "--epochs", "1",
                                        "--out", "OUT"], "imagenet"),
    ("bad --arch-kwargs", lambda g, t: ["train", "--data", f"npz:{TINY}", "--arch", "mlp", "--arch-kwargs", "{oops",
                                        "--epochs", "1", "--out", "OUT"], "--arch-kwargs"),
    ("output directory missing", lambda g, t: ["partition", "--scores", g / "scores.npz", "--out",
                                               t / "no" / "dir" / "p.npz"], "does not exist"),
]


# Well-formed files whose array headers claim a billion rows the file does not hold: one of each kind of
# .npz the tool reads, and checkpoints whose header or metadata claims more than the file holds.
BILLION = 10 ** 9
LYING = [
    ("lying header: data npz", lambda g, t: ["train", "--data", f"npz:{_lying_npz(TINY, t / 'd.npz', 'x')}",
                                             "--arch", "mlp", "--epochs", "1", "--out", "OUT"], "claims shape"),
    ("lying header: noise", lambda g, t: ["train", "--data", f"npz:{TINY}", "--noise", _lying_npz(
        g / "noise.npz", t / "n.npz", "labels"), "--arch", "mlp", "--epochs", "1", "--out", "OUT"], "claims shape"),
    ("lying header: scores", lambda g, t: ["partition", "--scores", _lying_npz(g / "scores.npz", t / "s.npz",
                                                                               "attribution"), "--out", "OUT"],
     "claims shape"),
    ("lying header: partition", lambda g, t: ["finetune", "--model", g / "model.safetensors", "--data",
                                              f"npz:{TINY}", "--noise", g / "noise.npz", "--partition", _lying_npz(
        g / "partition.npz", t / "p.npz", "clean_prob"), "--out", "OUT"], "claims shape"),
    ("lying header: sensitivity", lambda g, t: ["prune", "--model", g / "model.safetensors", "--sensitivity",
                                                _lying_npz(g / "sensitivity.npz", t / "s.npz", "coefficient"),
                                                "--ratio", "0.1", "--out", "OUT"], "claims shape"),
    ("lying header: holdout", lambda g, t: ["finetune", "--model", g / "model.safetensors", "--data", f"npz:{TINY}",
                                            "--noise", g / "noise.npz", "--partition", g / "partition.npz",
                                            "--exclude", _lying_npz(g / "holdout.npz", t / "h.npz", "is_held"),
                                            "--out", "OUT"], "claims shape"),
    ("lying header: scores shard", lambda g, t: ["merge", _lying_npz(g / "scores-0.npz", t / "s0.npz", "attribution"),
                                                 "--out", "OUT"], "claims shape"),
    ("lying header: sensitivity shard", lambda g, t: ["merge", _lying_npz(g / "sensitivity-0.npz", t / "m0.npz",
                                                                          "cxx"), "--out", "OUT"], "claims shape"),
    ("lying header: checkpoint tensor", lambda g, t: ["evaluate", "--model", _lying_safetensors(
        g / "model.safetensors", t / "m.safetensors"), "--data", f"npz:{TINY}"], "m.safetensors"),
    ("lying metadata: input shape", lambda g, t: ["evaluate", "--model", _rewrite_record(
        g / "model.safetensors", t / "m.safetensors", lambda r: r.update(input_shape=[1, 100_000, 100_000])),
        "--data", f"npz:{TINY}"], "shape"),
    ("lying metadata: mask units", lambda g, t: ["evaluate", "--model", _rewrite_record(
        g / "model.safetensors", t / "m.safetensors", lambda r: r.update(
            masks={"head:input": {"units": 10 ** 12, "removed": [0]}})), "--data", f"npz:{TINY}"], "units"),
]
CASES += LYING


def _lying_npz(source, target, member, rows=BILLION):
    """``source`` with the header of array ``member`` claiming ``rows`` rows; every byte of data unchanged."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        for info in archive.infolist():
            data = archive.read(info)
            if info.filename == f"{member}.npy":
                stream = io.BytesIO(data)
                version = np.lib.format.read_magic(stream)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(stream)
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                              "fortran_order": fortran, "shape": (rows, *shape[1:])})
                data = header.getvalue() + data[stream.tell():]
            out.writestr(info.filename, data)
    return target


def _lying_safetensors(source, target):
    """``source`` whose header says its classifier weight has a billion rows (its offsets unchanged)."""
    raw = source.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + length])
    header["head.weight"]["shape"][0] = BILLION
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    target.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length:])
    return target


def _rewrite_record(source, target, change):
    """``source`` with its ``denoise`` metadata record changed by ``change(record)``."""
    def rewrite(tensors, metadata):
        record = json.loads(metadata["denoise"])
        change(record)
        metadata["denoise"] = json.dumps(record)
    return _rewrite_safetensors(source, target, lambda tensors: None, rewrite)


def _bad_header(source, target):
    raw = source.read_bytes()
    target.write_bytes(raw.replace(b"'fortran_order': False", b"'fortran_order': Fals(", 1))
    return target


def _garbage(path):
    path.write_bytes(b"\x13\x00\x00\x00\x00\x00\x00\x00{not json}" + bytes(40))
    return path


def _plain(path):
    save_file({"w": torch.zeros(3)}, path)
    return path


def _text(path):
    path.write_text("hello")
    return path


def _no_y(path):
    np.savez(path, x=np.zeros((3, 2), np.float32))
    return path


def _cut(path, n):
    return {name: value[:n] for name, value in _arrays(path).items() if name != "meta"}


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 25


@pytest.mark.parametrize("build,mention", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_cleanly(denoise, good, tmp_path, build, mention):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out_dir = tmp_path / "outputs"
    out_dir.mkdir()
    out = out_dir / "result.out"
    argv = [str(out) if a == "OUT" else a for a in build(good, scratch)]
    before = sorted(p.name for p in good.iterdir())
    result = denoise(*argv)
    assert result.code != 0
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err and lines[0].startswith("denoise:")
    assert mention in lines[0], lines[0]
    assert list(out_dir.iterdir()) == [], "an output (or temporary) file was left behind"
    assert sorted(p.name for p in good.iterdir()) == before


def _absurd_label(folder):
    """60 samples of labels 0 and 1, one of which is 10^9 (``range(max + 1)`` classes would take 22 GB)."""
    labels = np.array([0, 1] * 30)
    labels[7] = BILLION
    np.savez(folder / "labels.npz", x=np.random.default_rng(0).random((60, 4), np.float32), y=labels)
    return f"npz:{folder / 'labels.npz'}"


def _png(path, width, height):
    """A 1-bit greyscale PNG of zeros: 20,000 x 20,000 pixels fit in 50 kB."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row, compressor = bytes(1 + (width + 7) // 8), zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def _image_folder(folder, big):
    """imagefolder: class ``a`` holds ``big(path)``, class ``b`` a 40 x 30 PNG."""
    for name in "ab":
        (folder / name).mkdir()
    big(folder / "a")
    _png(folder / "b" / "small.png", 40, 30)
    return f"imagefolder:{folder}"


def _large_jpeg(folder):
    from PIL import Image

    Image.new("L", (6000, 6000), 128).save(folder / "large.jpg")  # 36 megapixels: decoded at half size


def _hour_of_audio(folder):
    """fsdd: one recording of an hour of FLAC-compressed silence at 48 kHz (0.5 MB; 0.7 GB as float32 samples),
    one of half a second of noise."""
    import soundfile

    with soundfile.SoundFile(folder / "0_a_5.wav", "w", samplerate=48000, channels=1, format="FLAC") as audio:
        for _ in range(165):
            audio.write(np.zeros(1 << 20, np.int16))
    soundfile.write(folder / "1_a_5.wav", np.random.default_rng(0).uniform(-1, 1, 24000), 48000)
    return f"fsdd:{folder}"


def _gzip_bomb_after_idx_header(folder):
    """mnist: the images file's header says 10 images, then 1.2 GB of zeros follow (5 MB gzipped)."""
    import gzip

    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb", compresslevel=1) as images:
        images.write(np.array([0x00000803, 10, 28, 28], ">u4").tobytes() + bytes(10 * 28 * 28))
        for _ in range(72):
            images.write(bytes(1 << 24))
    (folder / "train-labels-idx1-ubyte").write_bytes(np.array([0x00000801, 10], ">u4").tobytes() + bytes(10))
    return f"mnist:{folder}"


# (id, build(good, tmp) -> argv, extra environment, what the one-line error mentions or None for a success)
HOSTILE = [(name, build, {}, mention) for name, build, mention in LYING] + [
    ("absurd label value", lambda g, t: ["train", "--data", _absurd_label(t), "--arch", "mlp", "--epochs", "1",
                                         "--out", "OUT"], {}, None),
    ("more classes than DENOISE_MAX_CLASSES", lambda g, t: ["train", "--data", _absurd_label(t), "--arch", "mlp",
                                                           "--epochs", "1", "--out", "OUT"],
     {"DENOISE_MAX_CLASSES": "2"}, "DENOISE_MAX_CLASSES"),
    ("decompression-bomb PNG", lambda g, t: ["train", "--data", _image_folder(
        t, lambda f: _png(f / "bomb.png", 20_000, 20_000)), "--arch", "cnn", "--epochs", "1", "--out", "OUT"], {},
     "DENOISE_MAX_PIXELS"),
    ("36-megapixel JPEG", lambda g, t: ["train", "--data", _image_folder(t, _large_jpeg), "--arch", "cnn",
                                        "--epochs", "1", "--out", "OUT"], {}, None),
    ("gzip bomb after an IDX header", lambda g, t: ["train", "--data", _gzip_bomb_after_idx_header(t), "--arch",
                                                    "cnn", "--epochs", "1", "--out", "OUT"], {},
     "train-images-idx3-ubyte.gz"),
    ("an hour of audio", lambda g, t: ["train", "--data", _hour_of_audio(t), "--arch", "mlp", "--epochs", "1",
                                       "--out", "OUT"], {}, None),
]


@pytest.fixture(scope="module")
def baseline_bytes(tmp_path_factory):
    """Peak RSS of a trivial command (``inspect`` of a small file): the tool's own imports."""
    measured = run_measured("inspect", TINY, tmp_path=tmp_path_factory.mktemp("baseline"))
    assert measured.code == 0, measured.err
    return measured.peak_bytes


def test_an_absurd_label_value_is_one_class_among_the_labels_that_occur(tmp_path):
    from denoise.cli.data import load_data

    dataset = load_data(_absurd_label(tmp_path))
    assert dataset.classes == ["0", "1", str(BILLION)]
    assert dataset.labels.max() == 2 and (dataset.labels == 2).sum() == 1


@pytest.mark.slow
@pytest.mark.parametrize("build,env,mention", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_huge_claims_end_within_a_minute_and_a_gibibyte(good, baseline_bytes, tmp_path, build, env, mention, request):
    scratch, out_dir = tmp_path / "scratch", tmp_path / "outputs"
    scratch.mkdir()
    out_dir.mkdir()
    argv = [str(out_dir / "result.out") if a == "OUT" else a for a in build(good, scratch)]
    measured = run_measured(*argv, tmp_path=tmp_path, env=env)
    above = (measured.peak_bytes - baseline_bytes) / 2**20
    print(f"\n{request.node.callspec.id}: {argv[0]} exit {measured.code}, {measured.seconds:.1f} s, peak {above:+.0f} MiB over the baseline")
    assert measured.seconds < 60
    assert measured.peak_bytes - baseline_bytes < 1 << 30, f"{measured.peak_bytes / 2**30:.2f} GiB"
    if mention is None:
        assert measured.code == 0, measured.err
        return
    lines = measured.err.strip().splitlines()
    assert measured.code == 2 and len(lines) == 1 and mention in lines[0], measured.err
    assert list(out_dir.iterdir()) == []
