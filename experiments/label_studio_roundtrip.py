"""A labelling round trip through a real Label Studio server, scripted.

Starts Label Studio on 127.0.0.1 in a temporary data dir, creates an image-classification project
through the SDK, imports an inas-jax task file (WORKDIR/labels/round_NN.tasks.json), submits one
annotation per answer row through the API, writes Label Studio's JSON export, and stops the server
(also on errors and Ctrl-C). Run it with the Label Studio virtualenv's python:

  /work/lsvenv/bin/python experiments/label_studio_roundtrip.py \
      --tasks=WORKDIR/labels/round_02.tasks.json --folder=DIR --answers=TRUTH.csv --export=OUT.json
  ... --run -- inas-jax --workdir=WORKDIR ...   # then `inas-jax-labels import WORKDIR OUT.json`
                                                # and the command after --

The answers CSV has columns `file,label` (`file` relative to DIR). A file with several rows gets
several annotations, in row order; a task whose file has no row is left unannotated; --skip=FILE
submits a skipped annotation (was_cancelled, empty result) instead. Classes come from --classes,
else DIR/classes.txt, else the predictions' and answers' labels. The export is the UI's "Export ->
JSON" (GET /api/projects/ID/export?exportType=JSON: tasks with at least one annotation, skipped
ones included); --all_tasks adds the unannotated tasks, as the SDK's exports.as_json does.

The first run builds a migrated, empty data dir (`label-studio init`, about 2 minutes) and caches it
in --cache; later runs copy it, and the server is up in about 10 s.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

USER, PASSWORD, TOKEN = "inas-jax@localhost.localdomain", "inas-jax-roundtrip", "inasjaxroundtriptoken0123456789"
FROM_NAME, TO_NAME = "label", "image"
# Keep the server off the network: no error reports, usage metrics or PyPI version check.
QUIET_ENV = {"SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
             "LABEL_STUDIO_LATEST_VERSION_CHECK": "false"}


def label_config(classes: list[str]) -> str:
    """The labelling config inas-jax documents: one image, one single-choice Choices per class."""
    choices = "".join(f'<Choice value="{c}"/>' for c in classes)
    return (f'<View><Image name="{TO_NAME}" value="$image"/><Choices name="{FROM_NAME}" toName="{TO_NAME}" '
            f'choice="single" showInLine="true">{choices}</Choices></View>')


def choice_result(label: str) -> list[dict]:
    """An annotation or prediction result choosing `label`."""
    return [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices", "value": {"choices": [label]}}]


def natural_key(s: str):
    """Sort key putting "2" before "10"."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)]


def read_answers(path: Path) -> dict[str, list[str]]:
    """file -> its labels, in row order, from a `file,label` CSV."""
    answers: dict[str, list[str]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            answers.setdefault(row["file"].strip(), []).append(row["label"].strip())
    return answers


def pick_classes(flag: str | None, folder: Path, tasks: list[dict], answers: dict[str, list[str]]) -> list[str]:
    """--classes, else DIR/classes.txt, else every label the predictions and answers use."""
    if flag:
        return [c.strip() for c in flag.split(",") if c.strip()]
    if (folder / "classes.txt").is_file():
        return [line.strip() for line in (folder / "classes.txt").read_text().splitlines() if line.strip()]
    seen = {c for t in tasks for p in t.get("predictions", []) for r in p.get("result", [])
            for c in r.get("value", {}).get("choices", [])}
    seen |= {label for labels in answers.values() for label in labels}
    return sorted(seen, key=natural_key)


class Server:
    """A Label Studio server on 127.0.0.1:PORT in a temporary data dir; a context manager."""

    def __init__(self, port: int, folder: Path, cache: Path | None, timeout: float):
        self.port, self.folder, self.cache, self.timeout = port, folder, cache, timeout
        self.bin = Path(sys.executable).parent / "label-studio"
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.startup_s = 0.0

    def _init(self, data_dir: Path) -> None:
        """Run `label-studio init`: migrate an empty database, create the user, its token and org."""
        cmd = [str(self.bin), "init", "--quiet", "--data-dir", str(data_dir), "--username", USER,
               "--password", PASSWORD, "--user-token", TOKEN, "--enable-legacy-api-token"]
        out = subprocess.run(cmd, env=dict(os.environ, **QUIET_ENV), capture_output=True, text=True)
        if out.returncode != 0 or not (data_dir / "label_studio.sqlite3").is_file():
            raise RuntimeError(f"label-studio init failed ({out.returncode}):\n{(out.stdout + out.stderr)[-3000:]}")

    def _data_dir(self, tmp: Path) -> Path:
        """A fresh data dir: a copy of the cached template, building the template if needed."""
        data = tmp / "data"
        if self.cache is None:
            self._init(data)
            return data
        if not (self.cache / "label_studio.sqlite3").is_file():
            print(f"building the Label Studio template data dir {self.cache} (once, ~2 min)", file=sys.stderr)
            building = Path(tempfile.mkdtemp(prefix=".building-", dir=self.cache.parent))
            self._init(building / "data")
            shutil.rmtree(self.cache, ignore_errors=True)
            os.replace(building / "data", self.cache)
            shutil.rmtree(building, ignore_errors=True)
        shutil.copytree(self.cache, data)
        return data

    def __enter__(self) -> "Server":
        if not self.bin.is_file():
            raise SystemExit(f"{self.bin} not found: run this with the Label Studio virtualenv's python")
        with socket.socket() as s:  # label-studio would silently move to the next free port
            if s.connect_ex(("127.0.0.1", self.port)) == 0:
                raise SystemExit(f"port {self.port} is in use: pass another --port")
        self.tmp = Path(tempfile.mkdtemp(prefix="inas-jax-ls-"))
        try:
            data = self._data_dir(self.tmp)
            env = dict(os.environ, **QUIET_ENV, LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
                       LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(self.folder))
            self.log = open(self.tmp / "server.log", "w")
            t0 = time.monotonic()
            self.proc = subprocess.Popen(
                [str(self.bin), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(self.port),
                 "--data-dir", str(data)], env=env, stdout=self.log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
            self._wait_healthy(t0)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_healthy(self, t0: float) -> None:
        """Poll /health until it answers {"status": "UP"}; fail if the server dies or times out."""
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"label-studio exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if json.loads(r.read()).get("status") == "UP":
                        self.startup_s = time.monotonic() - t0
                        return
            except OSError:
                pass
            if time.monotonic() - t0 > self.timeout:
                raise RuntimeError(f"label-studio not healthy after {self.timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.5)

    def log_tail(self, n: int = 3000) -> str:
        """The end of the server's log."""
        self.log.flush()
        return (self.tmp / "server.log").read_text(errors="replace")[-n:]

    def __exit__(self, *exc) -> None:
        """Stop the server's whole process group (SIGTERM, then SIGKILL) and remove the data dir."""
        if self.proc is not None and self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)
                    self.proc.wait(wait)
                    break
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue
        if getattr(self, "log", None):
            self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def round_trip(args, tasks: list[dict], answers: dict[str, list[str]], classes: list[str], server: Server) -> dict:
    """Project, storage, import, annotations, export against a running server; returns counts."""
    from label_studio_sdk import LabelStudio

    client = LabelStudio(base_url=server.url, api_key=TOKEN)
    title = f"inas-jax {args.tasks.name.removesuffix('.tasks.json')}"[:50]
    project = client.projects.create(title=title, label_config=label_config(classes))

    # /data/local-files/?d=PATH is served only under a Local Files storage whose path covers PATH and is
    # a subdirectory of the document root (DIR itself is refused), so add one per top-level folder.
    tops = sorted({Path(t["data"]["file"]).parts[0] for t in tasks if len(Path(t["data"]["file"]).parts) > 1})
    for top in tops:
        client.import_storage.local.create(project=project.id, path=str(args.folder / top), title=f"inas-jax {top}")
    if any(len(Path(t["data"]["file"]).parts) == 1 for t in tasks):
        print("warning: Label Studio cannot serve images that lie directly in DIR", file=sys.stderr)
    unseen = []
    for task in tasks:  # what the labelling page will fetch
        req = urllib.request.Request(server.url + task["data"]["image"], headers={"Authorization": f"Token {TOKEN}"})
        try:
            urllib.request.urlopen(req, timeout=10).close()
        except OSError:
            unseen.append(task["data"]["image"])
    if unseen:
        print(f"warning: {len(unseen)} images do not load in Label Studio, e.g. {unseen[0]}", file=sys.stderr)

    imported = client.projects.import_tasks(id=project.id, request=tasks, return_task_ids=True)
    by_file = {t.data["file"]: t.id for t in client.tasks.list(project=project.id)}
    n_done = n_skipped = n_open = 0
    for task in tasks:
        file, task_id = task["data"]["file"], by_file[task["data"]["file"]]
        if file in args.skip:
            client.annotations.create(id=task_id, result=[], was_cancelled=True)
            n_skipped += 1
        for label in answers.get(file, []):
            client.annotations.create(id=task_id, result=choice_result(label))
            n_done += 1
        n_open += file not in args.skip and not answers.get(file)

    raw = b"".join(client.projects.exports.download_sync(project.id, export_type="JSON",
                                                           download_all_tasks=args.all_tasks))
    exported = json.loads(raw)
    args.export.parent.mkdir(parents=True, exist_ok=True)
    args.export.write_bytes(raw)  # byte for byte what the server sent
    return {"project": project.id, "tasks": imported.task_count, "predictions": imported.prediction_count,
            "images_loading": len(tasks) - len(unseen), "annotations": n_done, "skipped": n_skipped, "unannotated": n_open, "exported": len(exported)}


def run_inas_jax(workdir: Path, export: Path, command: list[str]) -> int:
    """`inas-jax-labels import WORKDIR EXPORT`, then `command` if given; the first non-zero status."""
    labels = shutil.which("inas-jax-labels") or str(Path(__file__).resolve().parents[1] / ".venv/bin/inas-jax-labels")
    for cmd in ([labels, "import", str(workdir), str(export)], command):
        if cmd:
            print("+ " + " ".join(cmd), flush=True)
            rc = subprocess.run(cmd).returncode
            if rc:
                return rc
    return 0


def main(argv: list[str]) -> int:
    """Parse the flags (the command after `--` is for --run) and do the round trip."""
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=Path, required=True, help="an inas-jax task file, WORKDIR/labels/round_NN.tasks.json")
    p.add_argument("--folder", type=Path, required=True, help="the image folder DIR (local-files document root)")
    p.add_argument("--answers", type=Path, required=True, help="CSV with columns file,label (file relative to DIR)")
    p.add_argument("--export", type=Path, required=True, help="where to write Label Studio's JSON export")
    p.add_argument("--port", type=int, default=8089)
    p.add_argument("--classes", help="comma-separated class names (default: DIR/classes.txt, else the labels used)")
    p.add_argument("--skip", default="", help="comma-separated files to submit as skipped (was_cancelled)")
    p.add_argument("--all_tasks", action="store_true", help="export unannotated tasks too (download_all_tasks)")
    p.add_argument("--cache", type=Path, default=None,
                   help="template data dir (default ~/.cache/inas-jax/label-studio-VERSION)")
    p.add_argument("--no_cache", action="store_true", help="migrate a new database every run (~2 min)")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for the server's health")
    p.add_argument("--run", action="store_true", help="then run inas-jax-labels import and the command after --")
    p.add_argument("--workdir", type=Path, help="for --run (default: the task file's WORKDIR)")
    args = p.parse_args(argv)
    args.folder, args.tasks = args.folder.resolve(), args.tasks.resolve()
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    import label_studio
    import label_studio_sdk.version as sdk_version
    versions = f"label-studio {label_studio.__version__}, label-studio-sdk {sdk_version.__version__}"
    cache = None if args.no_cache else (args.cache or Path.home() / f".cache/inas-jax/label-studio-{label_studio.__version__}")
    if cache is not None:
        cache = cache.resolve()
        cache.parent.mkdir(parents=True, exist_ok=True)

    tasks = json.loads(args.tasks.read_text())
    answers = read_answers(args.answers)
    classes = pick_classes(args.classes, args.folder, tasks, answers)
    bad = sorted({label for labels in answers.values() for label in labels} - set(classes))
    if bad:
        raise SystemExit(f"answers use labels outside the classes {classes}: {bad}")
    missing = sorted(args.skip - {t["data"]["file"] for t in tasks})
    if missing:
        raise SystemExit(f"--skip names files not in {args.tasks}: {missing}")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server is stopped on kill too
    t0 = time.monotonic()
    with Server(args.port, args.folder, cache, args.timeout) as server:
        counts = round_trip(args, tasks, answers, classes, server)
        startup = server.startup_s
    print(f"{versions}: {counts['tasks']} tasks ({counts['predictions']} predictions) imported, "
          f"{counts['images_loading']} of their images load, "
          f"{counts['annotations']} annotations, {counts['skipped']} skipped, {counts['unannotated']} unannotated; "
          f"{counts['exported']} tasks exported to {args.export} (server up in {startup:.1f} s, "
          f"{time.monotonic() - t0:.1f} s in all)")
    if args.run:
        return run_inas_jax(args.workdir or args.tasks.parent.parent, args.export, command)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # the server was already stopped on the way out
        sys.exit(130)
