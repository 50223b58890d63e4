"""Image folders (`folder:DIR`): layouts, formats, refusals, the decode cache and the example folder."""
import csv
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import SUBPROCESS_TIMEOUT
from inas_jax import data
from inas_jax.data import DataError, decode_images, load_dataset, load_folder
from inas_jax.data import folder as folder_source
from inas_jax.data.dataset import checked
from inas_jax.data.example_folder import main as example_main

# Computed with the code before image folders existed: the other sources' fingerprints must not move.
DIGITS_FINGERPRINT = {"name": "digits", "source": "sklearn", "train": 1300, "test": 497, "image_shape": [8, 8, 1],
                      "num_classes": 10,
                      "sha256": "97403620cffda124d909bd5cf6c4a9c32a1df771d867f82b84ebfbf07ef54f36"}
SMALL_NPZ_FINGERPRINT = {"name": "npz:fp_small.npz", "source": "npz", "file_bytes": 2202, "train": 4, "test": 2,
                         "image_shape": [8, 8, 3], "num_classes": 3,
                         "sha256": "ae0dfb647cceed77130d5d02d8f752b58f591e50fb82fdc6ca8f697a905fc01e"}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test gets its own decode cache."""
    path = tmp_path / "folder_cache"
    monkeypatch.setenv("INAS_JAX_FOLDER_CACHE", str(path))
    return path


def _save(root, rel, value, size=(8, 8), mode="L", **kwargs):
    """Writes an image of one value (an int, or an RGB tuple) at root/rel; returns its path."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path, **kwargs)
    return path


def _train_folder(root, classes=("b", "a"), per_class=2, test=True):
    """root/train/<class>/ (one image nested a level down), root/test/<class>/; pixel value = 10 * class
    index by name order + image number."""
    for c, name in enumerate(sorted(classes)):
        for k in range(per_class):
            _save(root, f"train/{name}/{'sub/' if k == 0 else ''}x{k}.png", 10 * c + k)
            if test:
                _save(root, f"test/{name}/t{k}.png", 100 + 10 * c + k)
    return root


def test_train_layout_labels_classes_and_order(tmp_path):
    ds = load_folder(str(_train_folder(tmp_path / "f")))
    assert ds.classes == ("a", "b") and ds.num_classes == 2 and ds.labels_known and ds.initial_idx is None
    assert ds.train_files == ("train/a/sub/x0.png", "train/a/x1.png", "train/b/sub/x0.png", "train/b/x1.png")
    assert ds.y_train.tolist() == [0, 0, 1, 1] and ds.y_test.tolist() == [0, 0, 1, 1]
    assert ds.x_train.shape == (4, 8, 8, 1) and ds.x_train.dtype == np.uint8
    assert ds.x_train[:, 0, 0, 0].tolist() == [0, 1, 10, 11] and ds.x_test[:, 0, 0, 0].tolist() == [100, 101, 110, 111]
    assert ds.test_files[0] == "test/a/t0.png" and ds.root == str(tmp_path / "f")
    assert ds.name == "folder:f" and ds.origin == {"source": "folder", "layout": "train", "image_size": None}
    assert load_dataset(f"folder:{tmp_path / 'f'}").fingerprint == ds.fingerprint


def test_classes_txt_orders_the_classes_and_a_test_split_is_optional(tmp_path):
    root = _train_folder(tmp_path / "f", test=False)
    (root / "classes.txt").write_text("b\n\n  a \n")
    ds = load_folder(str(root))
    assert ds.classes == ("b", "a") and ds.train_files[0] == "train/b/sub/x0.png"
    assert ds.y_train.tolist() == [0, 0, 1, 1] and ds.x_train[:, 0, 0, 0].tolist() == [10, 11, 0, 1]
    assert ds.x_test.shape == (0, 8, 8, 1) and ds.y_test.shape == (0,) and ds.test_files == ()


def test_pool_layout_puts_the_labelled_first_and_marks_the_rest_unknown(tmp_path):
    root = tmp_path / "pool"
    _save(root, "labelled/dog/d.png", 1)
    _save(root, "labelled/cat/c2.png", 2)
    _save(root, "labelled/cat/c1.png", 3)
    for rel, value in (("unlabelled/z.png", 4), ("unlabelled/deep/er/a.png", 5), ("unlabelled/b.png", 6)):
        _save(root, rel, value)
    _save(root, "test/dog/t.png", 7)
    ds = load_folder(str(root))
    assert ds.classes == ("cat", "dog") and not ds.labels_known
    assert ds.train_files == ("labelled/cat/c1.png", "labelled/cat/c2.png", "labelled/dog/d.png",
                              "unlabelled/b.png", "unlabelled/deep/er/a.png", "unlabelled/z.png")
    assert ds.y_train.tolist() == [0, 0, 1, -1, -1, -1] and ds.initial_idx.tolist() == [0, 1, 2]
    assert ds.x_train[:, 0, 0, 0].tolist() == [3, 2, 1, 6, 5, 4] and ds.y_test.tolist() == [1]
    assert ds.fingerprint["labels_known"] is False and ds.origin["layout"] == "pool"


def test_a_pool_without_labels_takes_its_classes_from_classes_txt_or_test(tmp_path):
    root = tmp_path / "pool"
    _save(root, "unlabelled/a.png", 1)
    _save(root, "unlabelled/b.png", 2)
    with pytest.raises(DataError, match="write .*classes.txt.* with one class name a line"):
        load_folder(str(root))
    _save(root, "test/y/t.png", 3)
    _save(root, "test/x/t.png", 4)
    ds = load_folder(str(root))
    assert ds.classes == ("x", "y") and ds.initial_idx.tolist() == [] and (ds.y_train == -1).all()
    (root / "classes.txt").write_text("y\nx\nz\n")
    ds = load_folder(str(root))
    assert ds.classes == ("y", "x", "z") and ds.test_files == ("test/y/t.png", "test/x/t.png")
    assert ds.y_test.tolist() == [0, 1] and ds.x_test[:, 0, 0, 0].tolist() == [3, 4]


def test_every_format_decodes_and_a_gif_gives_its_first_frame(tmp_path):
    root = tmp_path / "f"
    colour = (200, 30, 60)
    for k, (ext, kwargs) in enumerate([("png", {}), ("BMP", {}), ("tif", {}), ("tiff", {}),
                                       ("webp", {"lossless": True})]):
        _save(root, f"train/a/{k}.{ext}", colour, mode="RGB", **kwargs)
    for k, ext in enumerate(("jpg", "JPEG")):
        _save(root, f"train/b/{k}.{ext}", colour, mode="RGB", quality=95)
    frames = [Image.new("RGB", (8, 8), c) for c in (colour, (0, 0, 255))]
    frames[0].save(root / "train/b/anim.gif", save_all=True, append_images=frames[1:])
    (root / "train/a/notes.txt").write_text("not an image")
    (root / "train/a/.hidden.png").write_bytes(b"ignored")
    ds = load_folder(str(root))
    assert len(ds.x_train) == 8 and ds.image_shape == (8, 8, 3)
    assert ds.train_files[-1] == "train/b/anim.gif"
    np.testing.assert_array_equal(ds.x_train[:5], np.broadcast_to(colour, (5, 8, 8, 3)))
    assert np.abs(ds.x_train[5:].astype(int) - colour).max() <= 4  # JPEG and the GIF palette are near
    assert ds.x_train[-1, ..., 2].max() < 100  # the first frame, not the blue second one


def test_channels_grey_when_every_image_is_grey_else_rgb_and_alpha_over_white(tmp_path):
    grey = tmp_path / "grey"
    _save(grey, "train/a/x.png", 50)
    _save(grey, "train/b/y.png", (60, 0), mode="LA")
    _save(grey, "train/b/z.png", 40000, mode="I;16")
    ds = load_folder(str(grey))
    assert ds.image_shape == (8, 8, 1)
    assert ds.x_train[:, 0, 0, 0].tolist() == [50, 255, round(40000 / 257)]  # transparent over white; 16 -> 8 bits
    mixed = tmp_path / "mixed"
    _save(mixed, "train/a/x.png", 50)
    _save(mixed, "train/b/y.png", (10, 20, 30, 255), mode="RGBA")
    _save(mixed, "train/b/z.png", (10, 20, 30, 0), mode="RGBA")
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 5, 6, 7] + [0] * 762)
    palette.save(mixed / "train/b/p.png")
    ds = load_folder(str(mixed))
    assert ds.image_shape == (8, 8, 3)
    assert ds.x_train[:, 0, 0].tolist() == [[50] * 3, [5, 6, 7], [10, 20, 30], [255] * 3]


def test_sizes_must_agree_unless_image_size_resizes_them(tmp_path):
    root = tmp_path / "f"
    _save(root, "train/a/x.png", 10, size=(8, 8))
    _save(root, "train/b/y.png", 20, size=(16, 12))
    with pytest.raises(DataError, match=r"differ in size \('train/a/x.png' is 8x8, 'train/b/y.png' is 16x12\): "
                                        "pass --image_size"):
        load_folder(str(root))
    ds = load_folder(str(root), image_size=10)
    assert ds.x_train.shape == (2, 10, 10, 1) and ds.x_train[:, 5, 5, 0].tolist() == [10, 20]
    assert ds.origin["image_size"] == 10 and load_dataset(f"folder:{root}", image_size=10).image_shape == (10, 10, 1)
    with pytest.raises(DataError, match="image_size 4 is too small"):
        load_folder(str(root), image_size=4)
    small = tmp_path / "small"
    _save(small, "train/a/x.png", 1, size=(6, 6))
    _save(small, "train/b/x.png", 2, size=(6, 6))
    with pytest.raises(DataError, match="are 6x6 .*at least 8x8"):
        load_folder(str(small))
    with pytest.raises(DataError, match="image_size applies to folder:DIR datasets only"):
        load_dataset("digits", image_size=16)


def test_decode_images_decodes_as_the_folder_does(tmp_path):
    root = _train_folder(tmp_path / "f")
    _save(root, "train/a/big.png", (9, 99, 199), size=(20, 30), mode="RGB")
    ds = load_folder(str(root), image_size=12)
    again = decode_images([root / f for f in ds.train_files], 12, 3)
    np.testing.assert_array_equal(again, ds.x_train)
    assert decode_images([root / ds.train_files[0]], 12, 1).shape == (1, 12, 12, 1)
    (root / "bad.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="1 image file cannot be read .*bad.png"):
        decode_images([root / "bad.png", root / ds.train_files[0]], 12, 3)


def _truncated_png(path):
    """An 8x8 PNG cut inside its pixel data: its header reads, its pixels do not."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:-40])


def test_unreadable_files_are_named_three_at_most_with_their_count(tmp_path):
    root = _train_folder(tmp_path / "f")
    for k in range(3):
        (root / f"train/a/garbage{k}.png").write_bytes(b"not a png")
    _truncated_png(root / "train/b/truncated.png")
    os.symlink(root / "absent.png", root / "train/b/dangling.jpg")
    with pytest.raises(DataError) as err:
        load_folder(str(root))
    message = str(err.value)
    assert "\n" not in message and message.startswith("5 image files") and message.count(".png'") >= 3
    assert "'train/a/garbage0.png', 'train/a/garbage1.png', 'train/a/garbage2.png' and 2 more" in message
    os.unlink(root / "train/b/dangling.jpg")
    for k in range(3):
        os.unlink(root / f"train/a/garbage{k}.png")
    with pytest.raises(DataError, match=r"^1 image file in .* cannot be read .*truncated.png"):
        load_folder(str(root))


def _links_one_file_twice(root):
    os.symlink(root / "train/a/x1.png", root / "train/b/link.png")


def _copies_bytes_to_another_class(root):
    (root / "train/b/copy.png").write_bytes((root / "train/a/x1.png").read_bytes())


@pytest.mark.parametrize("spoil,message", [
    (lambda r: (r / "train/c").mkdir(), "class folder train/c in .* holds no images"),
    (lambda r: (r / "test/d/q.txt").parent.mkdir() or _save(r, "test/d/q.png", 1), "test/d in .* is a class the"),
    (_links_one_file_twice, "'train/a/x1.png' and 'train/b/link.png' in .* are the same file"),
    (_copies_bytes_to_another_class, "identical bytes under two classes"),
    (lambda r: (r / "classes.txt").write_text("a\n"), "class folder train/b in .* is not in classes.txt"),
    (lambda r: (r / "classes.txt").write_text("a\nb\na\n"), "names the class 'a' twice"),
    (lambda r: (r / "classes.txt").write_text("a\nb\nc\n"), "names 'c', but train/ has no folder 'c'"),
    (lambda r: (r / "classes.txt").write_text("\n\n"), "names no class"),
    (lambda r: _save(r, "unlabelled/u.png", 1), "has both train/ and labelled/ or unlabelled/"),
    (lambda r: _save(r, "train/loose.png", 1), "train/loose.png in .* is not inside a class folder"),
])
def test_bad_folders_are_refused_in_one_line(tmp_path, spoil, message):
    root = _train_folder(tmp_path / "f")
    spoil(root)
    with pytest.raises(DataError, match=message) as err:
        load_folder(str(root))
    assert "\n" not in str(err.value)


def test_folders_without_images_or_layout_are_refused(tmp_path):
    with pytest.raises(DataError, match="does not exist or is not a folder"):
        load_folder(str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has neither train/<class>/ nor labelled/<class>/ and unlabelled/"):
        load_folder(str(tmp_path / "empty"))
    (tmp_path / "empty/unlabelled").mkdir()
    (tmp_path / "empty/classes.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match="holds no images in its pool"):
        load_folder(str(tmp_path / "empty"))
    one = tmp_path / "one"
    _save(one, "train/a/x.png", 1)
    with pytest.raises(DataError, match="fewer than 2 classes"):
        load_folder(str(one))


def test_duplicates_within_a_class_or_the_unlabelled_are_accepted(tmp_path):
    root = tmp_path / "pool"
    _save(root, "labelled/a/x.png", 1)
    (root / "labelled/a/same.png").write_bytes((root / "labelled/a/x.png").read_bytes())
    _save(root, "labelled/b/y.png", 2)
    for name in ("u1.png", "u2.png"):
        (root / "unlabelled").mkdir(exist_ok=True)
        (root / "unlabelled" / name).write_bytes((root / "labelled/b/y.png").read_bytes())
    assert load_folder(str(root)).y_train.tolist() == [0, 0, 1, -1, -1]


def _no_decoding(monkeypatch):
    def fail(*args):
        raise AssertionError("decoded although the cache holds the folder")
    monkeypatch.setattr(folder_source, "_decode_folder", fail)


def test_a_second_load_reads_the_cache_and_a_changed_file_misses_it(tmp_path, monkeypatch, cache):
    root = _train_folder(tmp_path / "f")
    first = load_folder(str(root))
    assert len(list(cache.glob("*.npz"))) == 1
    with monkeypatch.context() as m:
        _no_decoding(m)
        again = load_folder(str(root))
        np.testing.assert_array_equal(again.x_train, first.x_train)
        assert again.fingerprint == first.fingerprint
        stat = os.stat(root / "train/a/x1.png")
        os.utime(root / "train/a/x1.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))
        with pytest.raises(AssertionError, match="decoded although"):
            load_folder(str(root))
    _save(root, "train/a/x1.png", 77)
    os.utime(root / "train/a/x1.png", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # content alone differs
    assert load_folder(str(root)).x_train[1, 0, 0, 0] == 77
    assert load_folder(str(root), image_size=9).image_shape == (9, 9, 1)  # another size, another entry


@pytest.mark.parametrize("damage", ["truncate", "flip", "directory", "other_key"])
def test_a_damaged_cache_file_is_ignored_with_a_warning_and_rewritten(tmp_path, cache, caplog, damage, monkeypatch):
    root = _train_folder(tmp_path / "f")
    first = load_folder(str(root))
    [entry] = cache.glob("*.npz")
    if damage == "truncate":
        entry.write_bytes(entry.read_bytes()[:300])
    elif damage == "flip":
        content = bytearray(entry.read_bytes())
        content[len(content) // 2] ^= 0xFF
        entry.write_bytes(bytes(content))
    elif damage == "directory":
        entry.unlink()
        entry.mkdir()
    else:
        other = tmp_path / "other"
        _train_folder(other, classes=("c", "d"))
        load_folder(str(other))
        [other_entry] = [p for p in cache.glob("*.npz") if p != entry]
        os.replace(other_entry, entry)
    with caplog.at_level(logging.WARNING, logger="inas_jax"):
        again = load_folder(str(root))
    np.testing.assert_array_equal(again.x_train, first.x_train)
    assert any("ignoring the damaged image-folder cache" in r.message for r in caplog.records)
    if damage != "directory":
        caplog.clear()
        _no_decoding(monkeypatch)
        load_folder(str(root))  # rewritten: read without decoding or warning
        assert not caplog.records or all(r.levelno < logging.WARNING for r in caplog.records)


def test_a_cache_that_cannot_be_written_only_costs_speed(tmp_path, monkeypatch, caplog):
    root = _train_folder(tmp_path / "f")
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("INAS_JAX_FOLDER_CACHE", str(tmp_path / "a_file" / "cache"))
    with caplog.at_level(logging.WARNING, logger="inas_jax"):
        ds = load_folder(str(root))
    assert len(ds.x_train) == 4 and any("cannot write the image-folder cache" in r.message for r in caplog.records)
    assert not list(tmp_path.glob("**/.*.tmp"))


def _cached_size(path):
    with np.load(path) as archive:
        return archive["images"].shape[1]


def test_the_cache_keeps_its_most_recently_used_entries(tmp_path, monkeypatch, cache):
    monkeypatch.setattr(folder_source, "CACHE_KEEP", 2)
    root = _train_folder(tmp_path / "f")
    load_folder(str(root), image_size=8)
    load_folder(str(root), image_size=9)
    [first] = [p for p in cache.glob("*.npz") if _cached_size(p) == 8]
    os.utime(first, (1, 1))
    load_folder(str(root), image_size=8)  # a hit makes it the newest again
    stale = cache / ".entry.npz.dead.tmp"  # a temporary file of a write that died
    stale.write_bytes(b"x")
    os.utime(stale, (1, 1))
    load_folder(str(root), image_size=10)
    sizes = sorted(_cached_size(p) for p in cache.glob("*.npz"))
    assert sizes == [8, 10] and not stale.exists()


def test_a_long_decode_logs_its_progress(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(folder_source, "LOG_EVERY_S", 0.0)
    monkeypatch.setattr(folder_source, "_CHUNK", 1)
    root = _train_folder(tmp_path / "f", per_class=3)
    with caplog.at_level(logging.INFO, logger="inas_jax"):
        load_folder(str(root))
    assert any(r.getMessage().startswith("decoded ") and r.getMessage().endswith("/12 images")
               for r in caplog.records)


def test_the_fingerprint_covers_names_and_files_but_not_where_the_folder_lies(tmp_path):
    root = _train_folder(tmp_path / "f")
    fp = load_folder(str(root)).fingerprint
    assert json.loads(json.dumps(fp)) == fp and str(tmp_path) not in json.dumps(fp)
    assert fp["class_names"] == ["a", "b"] and "labels_known" not in fp
    os.rename(tmp_path / "f", tmp_path / "moved")
    (tmp_path / "elsewhere").mkdir()
    os.rename(tmp_path / "moved", tmp_path / "elsewhere" / "f")
    assert load_folder(str(tmp_path / "elsewhere" / "f")).fingerprint == fp
    os.rename(tmp_path / "elsewhere/f/train/a/x1.png", tmp_path / "elsewhere/f/train/a/x9.png")
    assert load_folder(str(tmp_path / "elsewhere" / "f")).fingerprint["files_sha256"] != fp["files_sha256"]


def test_the_other_sources_keep_their_fingerprints(tmp_path, digits):
    assert digits.fingerprint == DIGITS_FINGERPRINT
    arrays = dict(x_train=np.arange(4 * 8 * 8 * 3, dtype=np.uint8).reshape(4, 8, 8, 3),
                  y_train=np.array([0, 1, 2, 1]), x_test=np.full((2, 8, 8, 3), 7, np.uint8), y_test=np.array([0, 2]))
    np.savez(tmp_path / "fp_small.npz", **arrays)
    assert data.load_npz(str(tmp_path / "fp_small.npz")).fingerprint == SMALL_NPZ_FINGERPRINT
    assert digits.classes == tuple("0123456789") and digits.labels_known and digits.initial_idx is None


def test_checked_allows_an_empty_test_split_and_unknown_labels_only_when_asked():
    x, y = np.zeros((3, 8, 8, 1), np.uint8), np.array([0, 1, -1])
    empty = (x[:0], y[:0])
    with pytest.raises(DataError, match="the test split is empty"):
        checked("t", x, np.array([0, 1, 1]), *empty, 2)
    with pytest.raises(DataError, match="y_train has label -1: labels must be 0..1$"):
        checked("t", x, y, x, np.array([0, 1, 1]), 2)
    ds = checked("t", x, y, *empty, 2, allow_empty_test=True, labels_known=False, initial_idx=np.array([0, 1]))
    assert ds.classes == ("0", "1") and len(ds.x_test) == 0
    with pytest.raises(DataError, match="initial_idx must list exactly"):
        checked("t", x, y, *empty, 2, allow_empty_test=True, labels_known=False, initial_idx=np.array([0]))
    with pytest.raises(DataError, match="3 class names for 2 classes"):
        checked("t", x, y, *empty, 2, allow_empty_test=True, labels_known=False, initial_idx=np.array([0, 1]),
                class_names=("a", "b", "c"))


def test_the_example_folder_writes_both_layouts_and_they_load(tmp_path, capsys, digits):
    assert example_main([str(tmp_path / "pool"), f"--truth={tmp_path / 'truth.csv'}"]) == 0
    out = capsys.readouterr().out
    assert f"python -m inas_jax.main --dataset=folder:{tmp_path / 'pool'} --workdir=runs/my_digits" in out
    pool = load_dataset(f"folder:{tmp_path / 'pool'}")
    big = np.repeat(np.repeat(digits.x_train, 2, axis=1), 2, axis=2)
    np.testing.assert_array_equal(pool.x_train, big)
    assert not pool.labels_known and pool.initial_idx.size == 0 and pool.classes == tuple("0123456789")
    assert pool.y_test.tolist() != [] and np.bincount(pool.y_test).tolist() == np.bincount(digits.y_test).tolist()
    with open(tmp_path / "truth.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == list(pool.train_files)
    assert [int(r["label"]) for r in rows] == digits.y_train.tolist()
    assert all("img_" in f and "/" not in f.removeprefix("unlabelled/") for f in pool.train_files)
    assert example_main([str(tmp_path / "train"), "--layout=train"]) == 0
    train = load_dataset(f"folder:{tmp_path / 'train'}")
    assert train.labels_known and train.image_shape == (16, 16, 1) and len(train.x_train) == 1300
    assert np.bincount(train.y_train).tolist() == np.bincount(digits.y_train).tolist()


def test_the_example_folder_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    proc = subprocess.run([sys.executable, "-m", "inas_jax.data.example_folder", str(tmp_path / "full")],
                          capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "is not an empty folder" in proc.stderr
