"""Image folders (`--dataset=folder:DIR`): `load_folder`, and `decode_images`, which decodes any image files
the same way.

Two layouts; images may nest at any depth below a class folder:
  DIR/train/<class>/..., optional DIR/test/<class>/...     every label known (torchvision's ImageFolder)
  DIR/labelled/<class>/... (optional), DIR/unlabelled/...,  a real pool: labels_known False, y_train -1 for
  optional DIR/test/<class>/...                             the unlabelled images, initial_idx the labelled
Pool order: labelled images (class order, then relative path), then unlabelled (relative path). Train and
test order: class order, then relative path.
Classes: the order of DIR/classes.txt (one name a line, blank lines ignored) when present, else the sorted
folder names of train/ or labelled/ (a pool with no labelled folder takes test/'s). Every class folder must
be in the class list; under the train layout every class needs a train/ folder.
Images: .png .jpg .jpeg .bmp .webp .tif .tiff .gif (the first frame), by extension, case-insensitive.
Hidden files and folders (".x") are skipped, other files ignored; links to files are followed, links to
folders only as a class folder itself.
Decoding: a partly transparent image is composited over white; 16-bit grey is scaled to 8 bits. Channels:
3 (RGB) when any image is stored in a colour mode (RGB, RGBA, P, CMYK, YCbCr ...), else 1 (luma). Sizes:
`image_size` S resizes every image to SxS with Pillow's BILINEAR filter (which averages over the footprint
when shrinking; JPEGs are first decoded at the smallest DCT scale not below S); None keeps the images'
common size. uint8 NHWC.
Duplicates: the same file reached twice (a link, a hard link) is refused; so are identical bytes under two
classes of one split. Identical bytes in one class, in unlabelled/ or across splits are accepted.
Cache: the decoded images are kept in $INAS_JAX_FOLDER_CACHE (default ~/.cache/inas_jax/folders), one
uncompressed .npz per key: a sha256 over every file's relative path, size, mtime_ns and content sha256,
image_size, LOADER_VERSION and Pillow's version. The file carries its key and a sha256 of its images; one
that fails either is ignored (a warning) and rewritten. A cache that cannot be written costs only speed.
The CACHE_KEEP most recently used entries are kept; older ones are removed after each write.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import logging
import os
import pathlib
import stat
import time

import numpy as np

from inas_jax.data.dataset import MIN_IMAGE_SIZE, DataError, Dataset, checked
from inas_jax.runtime.atomic import write_atomic

LOADER_VERSION = 1
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
CLASSES_FILE = "classes.txt"
CACHE_ENV = "INAS_JAX_FOLDER_CACHE"
CACHE_KEEP = 8  # entries kept in the cache directory, the most recently used
LOG_EVERY_S = 5.0
_CHUNK = 256
_EXTENSIONS_TEXT = " ".join(sorted(IMAGE_EXTENSIONS))

log = logging.getLogger("inas_jax")


@dataclasses.dataclass(frozen=True)
class Listing:
    """A folder's files before decoding: train_files (N,) and test_files (M,), relative posix paths, with
    y_train (N,) and y_test (M,) int32 labels (-1: unlabelled) and the class names (K,)."""

    layout: str
    classes: tuple[str, ...]
    train_files: tuple[str, ...]
    y_train: np.ndarray
    test_files: tuple[str, ...]
    y_test: np.ndarray


def load_folder(path: str, image_size: int | None = None) -> Dataset:
    """The Dataset of an image folder (the layouts and rules above); raises DataError in one line."""
    root = os.path.abspath(path)
    if not os.path.isdir(root):
        raise DataError(f"image folder {path!r} does not exist or is not a folder")
    if image_size is not None and image_size < MIN_IMAGE_SIZE:
        raise DataError(f"image_size {image_size} is too small: images must be at least "
                        f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}")
    try:
        listing = list_folder(root)
    except OSError as err:
        raise DataError(f"image folder {path!r} cannot be listed: {_one_line(err)}") from None
    files = listing.train_files + listing.test_files
    key = _cache_key(root, listing, image_size)
    images = None if key is None else _read_cache(key, len(files))
    if images is None:
        images = _decode_folder(root, files, image_size)
        if key is not None:
            _write_cache(key, images)
    n = len(listing.train_files)
    labelled = listing.y_train >= 0
    return checked("folder:" + os.path.basename(root), images[:n], listing.y_train, images[n:], listing.y_test,
                   len(listing.classes), source=path, allow_empty_test=True,
                   origin={"source": "folder", "layout": listing.layout, "image_size": image_size},
                   class_names=listing.classes, train_files=listing.train_files, test_files=listing.test_files,
                   initial_idx=None if listing.layout == "train" else np.flatnonzero(labelled),
                   labels_known=listing.layout == "train", root=root)


def list_folder(root: str) -> Listing:
    """The layout, classes and files of the image folder `root`; raises DataError (or OSError)."""
    has = {d: os.path.isdir(os.path.join(root, d)) for d in ("train", "test", "labelled", "unlabelled")}
    if has["train"] and (has["labelled"] or has["unlabelled"]):
        raise DataError(f"image folder {root!r} has both train/ and labelled/ or unlabelled/: use one layout "
                        "(train/<class>/ when every label is known, labelled/<class>/ + unlabelled/ for a pool)")
    if not (has["train"] or has["labelled"] or has["unlabelled"]):
        raise DataError(f"image folder {root!r} has neither train/<class>/ nor labelled/<class>/ and "
                        "unlabelled/: see `python -m inas_jax.data.example_folder --help` for the layouts")
    names = _read_classes_file(root)
    test = _class_folders(root, "test") if has["test"] else {}
    if has["train"]:
        train = _class_folders(root, "train")
        classes = _class_order(root, names, train, "train")
        missing = [c for c in classes if c not in train]
        if missing:
            raise DataError(f"{CLASSES_FILE} in {root!r} names {missing[0]!r}, but train/ has no folder "
                            f"{missing[0]!r}: every class needs training images")
        train_files, y_train = _by_class(train, classes)
    else:
        labelled = _class_folders(root, "labelled") if has["labelled"] else {}
        classes = _class_order(root, names, labelled or test, "labelled" if labelled else "test")
        files, labels = _by_class(labelled, classes)
        unlabelled = _images_under(root, "unlabelled") if has["unlabelled"] else []
        train_files = files + tuple(unlabelled)
        y_train = np.concatenate([labels, np.full(len(unlabelled), -1, np.int32)])
    strays = [c for c in test if c not in classes]
    if strays:
        raise DataError(f"test/{strays[0]} in {root!r} is a class the "
                        f"{'train/' if has['train'] else 'class list'} lacks ({', '.join(classes)}): "
                        f"rename or remove it, or list it in {CLASSES_FILE}")
    if not train_files:
        raise DataError(f"image folder {root!r} holds no images in its pool ({_EXTENSIONS_TEXT})")
    test_files, y_test = _by_class(test, classes)
    return Listing("train" if has["train"] else "pool", classes, train_files, y_train, test_files, y_test)


def _read_classes_file(root: str) -> list[str] | None:
    """The class names of root/classes.txt in order (blank lines ignored), or None without one."""
    path = os.path.join(root, CLASSES_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path!r} cannot be read: {_one_line(err)}") from None
    if not names:
        raise DataError(f"{path!r} names no class: write one class name a line")
    seen = set()
    for name in names:
        if name in seen:
            raise DataError(f"{path!r} names the class {name!r} twice")
        seen.add(name)
    return names


def _class_order(root: str, names: list[str] | None, folders: dict, split: str) -> tuple[str, ...]:
    """The classes: classes.txt's names when given (every folder must be among them), else sorted folders."""
    if names is None:
        if not folders:
            raise DataError(f"image folder {root!r} has no class folders to name its classes: write "
                            f"{os.path.join(root, CLASSES_FILE)!r} with one class name a line")
        return tuple(sorted(folders))
    unlisted = [f for f in folders if f not in names]
    if unlisted:
        raise DataError(f"class folder {split}/{unlisted[0]} in {root!r} is not in {CLASSES_FILE}: add it "
                        "there or rename the folder")
    return tuple(names)


def _class_folders(root: str, split: str) -> dict[str, list[str]]:
    """{class name: its images' relative paths, sorted} for the class folders of root/split."""
    folders = {}
    with os.scandir(os.path.join(root, split)) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                files = _images_under(root, f"{split}/{entry.name}")
                if not files:
                    raise DataError(f"class folder {split}/{entry.name} in {root!r} holds no images "
                                    f"({_EXTENSIONS_TEXT}): add images or remove the folder")
                folders[entry.name] = files
            elif _is_image(entry.name):
                raise DataError(f"{split}/{entry.name} in {root!r} is not inside a class folder: move it "
                                f"into {split}/<class>/")
    return folders


def _images_under(root: str, sub: str) -> list[str]:
    """The image files below root/sub at any depth, as sorted relative posix paths; hidden ones skipped."""
    def fail(err: OSError):
        raise err

    out = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, sub), onerror=fail):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = pathlib.PurePath(os.path.relpath(dirpath, root)).as_posix()
        out.extend(f"{rel}/{f}" for f in filenames if _is_image(f))
    return sorted(out)


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _by_class(folders: dict[str, list[str]], classes: tuple[str, ...]) -> tuple[tuple[str, ...], np.ndarray]:
    """(files, labels (n,) int32) in class order, then the folder's sorted order."""
    files, labels = [], []
    for label, name in enumerate(classes):
        files.extend(folders.get(name, ()))
        labels.extend([label] * len(folders.get(name, ())))
    return tuple(files), np.asarray(labels, np.int32)


def _cache_key(root: str, listing: Listing, image_size: int | None) -> str | None:
    """The cache key of a listing's images (hex sha256), None when a file cannot be read (decoding names it);
    raises DataError for a duplicate file."""
    from PIL import __version__ as pillow_version

    files = listing.train_files + listing.test_files
    stamps, failed = _in_chunks(lambda i: _stamp(os.path.join(root, files[i])), len(files), "read")
    _check_duplicates(root, listing, stamps)
    if failed:
        return None
    digest = hashlib.sha256(f"{LOADER_VERSION};{image_size};{pillow_version};{len(listing.train_files)};"
                            .encode())
    for name, (size, mtime, _, content) in zip(files, stamps):
        digest.update(f"{name}\0{size}\0{mtime}\0".encode() + content)
    return digest.hexdigest()


def _stamp(path: str) -> tuple[int, int, tuple[int, int], bytes]:
    """(size, mtime_ns, (device, inode), sha256 of the content) of one file, following links."""
    fd = os.open(path, os.O_RDONLY)
    try:
        info = os.fstat(fd)
        digest = hashlib.sha256()
        while chunk := os.read(fd, max(info.st_size + 1, 1 << 16)):
            digest.update(chunk)
    finally:
        os.close(fd)
    return info.st_size, info.st_mtime_ns, (info.st_dev, info.st_ino), digest.digest()


def _check_duplicates(root: str, listing: Listing, stamps: list) -> None:
    """Refuses a file reached twice and identical bytes under two classes of one split."""
    files = listing.train_files + listing.test_files
    labels = np.concatenate([listing.y_train, listing.y_test])
    split = np.arange(len(files)) >= len(listing.train_files)
    inodes, contents = {}, {}
    for i, stamp in enumerate(stamps):
        if stamp is None:
            continue
        _, _, inode, content = stamp
        j = inodes.setdefault(inode, i)
        if j != i:
            raise DataError(f"{files[j]!r} and {files[i]!r} in {root!r} are the same file (a link): each "
                            "image must appear once")
        if labels[i] < 0:
            continue
        j = contents.setdefault((split[i], content), i)
        if labels[j] != labels[i]:
            raise DataError(f"{files[j]!r} and {files[i]!r} in {root!r} hold identical bytes under two "
                            "classes: one image has one label; remove one of them")


def _decode_folder(root: str, files: tuple[str, ...], image_size: int | None) -> np.ndarray:
    """The folder's images (N, H, W, C) uint8, decoded in parallel; raises DataError for unreadable files."""
    from PIL import Image

    paths = [os.path.join(root, f) for f in files]

    def header(i):
        with Image.open(paths[i]) as im:
            return im.size, im.mode not in GREY_MODES

    headers, failed = _in_chunks(header, len(paths), "read")
    readable = [i for i, h in enumerate(headers) if h is not None]
    if not readable:
        raise _unreadable(root, files, failed)
    if image_size is not None:
        width = height = image_size
    else:
        width, height = _common_size(root, files, headers, readable, strict=not failed)
    channels = 3 if any(headers[i][1] for i in readable) else 1
    images, more = _decode_into(paths, np.zeros((len(paths), height, width, channels), np.uint8), readable)
    failed.update(more)
    if failed:
        raise _unreadable(root, files, failed)
    return images


def _common_size(root: str, files, headers, readable: list[int], strict: bool) -> tuple[int, int]:
    """(width, height) shared by every readable image; other sizes are an error when `strict`."""
    sizes = {}
    for i in readable:
        sizes.setdefault(headers[i][0], files[i])
    (width, height), first = next(iter(sizes.items()))
    if len(sizes) > 1 and strict:
        (w2, h2), second = list(sizes.items())[1]
        raise DataError(f"the images in {root!r} differ in size ({first!r} is {width}x{height}, {second!r} is "
                        f"{w2}x{h2}): pass --image_size=S to resize them all to SxS")
    if min(width, height) < MIN_IMAGE_SIZE:
        raise DataError(f"the images in {root!r} are {width}x{height} ({first!r}): they must be at least "
                        f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}; pass --image_size=S to resize them")
    return width, height


def decode_images(paths, image_size: int, channels: int) -> np.ndarray:
    """Image files decoded and resized as image folders are: (N, image_size, image_size, channels) uint8.

    channels: 1 (luma) or 3 (RGB). Raises DataError naming up to three unreadable files and their count.
    """
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, not {channels}")
    if image_size < MIN_IMAGE_SIZE:
        raise DataError(f"image_size {image_size} is too small: at least {MIN_IMAGE_SIZE}")
    paths = [os.fspath(p) for p in paths]
    out = np.zeros((len(paths), image_size, image_size, channels), np.uint8)
    images, failed = _decode_into(paths, out, range(len(paths)))
    if failed:
        raise _unreadable(None, paths, failed)
    return images


def _decode_into(paths: list[str], out: np.ndarray, which) -> tuple[np.ndarray, dict[int, str]]:
    """Decodes paths[i] into out[i] (N, H, W, C) for i in `which`; returns (out, {index: reason})."""
    from PIL import Image

    which = list(which)
    height, width, channels = out.shape[1:]

    def decode(k):
        i = which[k]
        with Image.open(paths[i]) as im:
            out[i] = _pixels(im, (width, height), channels).reshape(height, width, channels)

    _, failed = _in_chunks(decode, len(which), "decoded", log_progress=True)
    return out, {which[k]: reason for k, reason in failed.items()}


def _pixels(im, size: tuple[int, int], channels: int) -> np.ndarray:
    """One opened PIL image as (H, W) or (H, W, 3) uint8 at size (W, H): alpha over white, 16 bits to 8."""
    from PIL import Image

    if im.format == "JPEG":
        im.draft(im.mode, size)
    im.load()
    if im.mode in SIXTEEN_BIT_MODES:
        wide = np.clip(np.asarray(im, np.int64), 0, 65535)
        im = Image.fromarray(((wide + 128) // 257).astype(np.uint8))
    if im.mode in ALPHA_MODES or "transparency" in im.info:
        im = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im)
    if im.mode != ("RGB" if channels == 3 else "L"):
        im = im.convert("RGB" if channels == 3 else "L")
    if im.size != size:
        im = im.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(im)


def _in_chunks(fn, n: int, verb: str, log_progress: bool = False) -> tuple[list, dict[int, str]]:
    """[fn(i) for i in range(n)] on a thread pool, chunk by chunk: (results, {i: why fn(i) failed}).

    Pillow and hashlib release the GIL while they work. With log_progress, logs "decoded 20,000/50,000
    images" every LOG_EVERY_S seconds.
    """
    results, failed = [None] * n, {}

    def run(start):
        for i in range(start, min(start + _CHUNK, n)):
            try:
                results[i] = fn(i)
            except Exception as err:  # Pillow raises many types for a bad file: each is that file's reason
                failed[i] = f"{type(err).__name__}: {_one_line(err)}"
        return min(start + _CHUNK, n) - start

    pool = concurrent.futures.ThreadPoolExecutor(_threads(), thread_name_prefix="inas_jax_images")
    try:
        done, last = 0, time.monotonic()
        for future in concurrent.futures.as_completed([pool.submit(run, s) for s in range(0, n, _CHUNK)]):
            done += future.result()
            if log_progress and time.monotonic() - last >= LOG_EVERY_S and done < n:
                log.info("%s %s/%s images", verb, f"{done:,}", f"{n:,}")
                last = time.monotonic()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results, failed


def _threads() -> int:
    """The worker threads: one per CPU this process may use, at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cpus))


def _unreadable(root: str | None, files, failed: dict[int, str]) -> DataError:
    """One line naming up to three unreadable files (the first with its reason) and how many there are."""
    where = f" in {root!r}" if root else ""
    first = sorted(failed)
    named = ", ".join(repr(files[i]) for i in first[:3])
    more = f" and {len(first) - 3:,} more" if len(first) > 3 else ""
    return DataError(f"{len(first):,} image file{'s' if len(first) > 1 else ''}{where} cannot be read "
                     f"(not an image, truncated or unreadable): {named}{more}; {files[first[0]]!r}: "
                     f"{failed[first[0]]}. Fix or remove them")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]


def cache_dir() -> str:
    """Where decoded folders are cached: $INAS_JAX_FOLDER_CACHE, else ~/.cache/inas_jax/folders."""
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "inas_jax", "folders")


def _checksum(images: np.ndarray) -> str:
    digest = hashlib.sha256(f"{images.dtype.str}{images.shape};".encode())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()


def _read_cache(key: str, count: int) -> np.ndarray | None:
    """The cached images (count, H, W, C) uint8 under `key`, or None (a damaged entry is warned about)."""
    path = os.path.join(cache_dir(), key + ".npz")
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        log.warning("image-folder cache %r cannot be read (%s): decoding the folder", path, _one_line(err))
        return None
    why = None
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        why = "not a regular file of this user"
    else:
        try:
            with np.load(path, allow_pickle=False) as archive:
                images, stored_key, checksum = archive["images"], str(archive["key"]), str(archive["sha256"])
            if images.dtype != np.uint8 or images.ndim != 4 or len(images) != count or images.shape[-1] not in (1, 3):
                why = f"it holds images of shape {images.shape} and dtype {images.dtype}"
            elif stored_key != key or checksum != _checksum(images):
                why = "its key or checksum disagrees with its content"
        except Exception as err:  # numpy and zipfile raise many types for a damaged file
            why = f"{type(err).__name__}: {_one_line(err)}"
    if why is None:
        log.info("read %s decoded images from the image-folder cache %r", f"{count:,}", path)
        with contextlib.suppress(OSError):
            os.utime(path)  # the newest entries are the ones kept
        return images
    log.warning("ignoring the damaged image-folder cache file %r (%s): decoding the folder again", path, why)
    return None


def _write_cache(key: str, images: np.ndarray) -> None:
    """Stores images under `key` atomically (a fresh temporary file renamed over the entry); a failure warns."""
    directory = cache_dir()
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        write_atomic(os.path.join(directory, key + ".npz"),
                     lambda f: np.savez(f, images=images, key=np.array(key), sha256=np.array(_checksum(images))))
    except OSError as err:
        log.warning("cannot write the image-folder cache in %r (%s): the next load decodes the folder again",
                    directory, _one_line(err))
        return
    _prune_cache(directory)


def _prune_cache(directory: str) -> None:
    """Removes all but the CACHE_KEEP most recently used entries, and temporary files of writes that died
    (older than an hour); only this user's regular files, and never an error."""
    entries, stale, now = [], [], time.time()
    with contextlib.suppress(OSError), os.scandir(directory) as listing:
        for entry in listing:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
                continue
            if entry.name.startswith(".") and entry.name.endswith(".tmp") and now - info.st_mtime > 3600:
                stale.append(entry.path)
            elif len(entry.name) == 68 and entry.name.endswith(".npz") and not entry.name.startswith("."):
                entries.append((info.st_mtime, entry.path))
    entries.sort(reverse=True)
    for path in stale + [path for _, path in entries[CACHE_KEEP:]]:
        with contextlib.suppress(OSError):
            os.unlink(path)
