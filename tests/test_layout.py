"""The package's shape: rooms that import one way, light modules that load no jax, short functions."""
import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1] / "inas_jax"
# room -> the rooms its modules may import (besides their own); main.py may import every room.
ALLOWED = {
    "config": {"model"},  # model.search_space only (checked below)
    "runtime": {"config"},
    "model": {"config", "runtime"},
    "data": {"config", "runtime"},
    "queries": {"config", "model", "runtime"},
    "loop": {"config", "model", "data", "queries", "oracle", "runtime"},
    "store": {"config", "model", "loop", "runtime"},
    "report": {"config", "model", "runtime"},  # runtime.atomic only (checked below)
    "oracle": {"config", "data", "runtime"},
    "predict": {"config", "model", "data", "loop", "queries", "store", "runtime"},
    "grid": {"config", "report"},
}
MAX_FUNCTION_LINES = 60


def _room(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return parts[0]


def _imports(path: pathlib.Path) -> set[str]:
    """The inas_jax modules `path` imports, as dotted names below inas_jax."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("inas_jax"):
            base = node.module.split(".")[1:]
            out.update(".".join(base + [a.name]) if not base else ".".join(base) for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith("inas_jax."))
    return out


def test_rooms_import_one_way():
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        room = _room(path)
        if room in ("main", "__init__"):
            continue
        for target in _imports(path):
            other = target.split(".")[0]
            if other != room and other not in ALLOWED[room]:
                wrong.append(f"{path.relative_to(ROOT)} imports inas_jax.{target}")
            if room in ("config", "report") and other == "model" and target != "model.search_space":
                wrong.append(f"{path.relative_to(ROOT)} imports inas_jax.{target} (only model.search_space is light)")
            if room in ("report", "oracle") and other == "runtime" and target != "runtime.atomic":
                wrong.append(f"{path.relative_to(ROOT)} imports inas_jax.{target} (only runtime.atomic is light)")
    assert not wrong, "\n".join(wrong)


def test_checking_a_command_line_and_reporting_load_no_jax():
    code = ("import sys, inas_jax.config, inas_jax.main, inas_jax.report.cli, inas_jax.data, inas_jax.oracle.cli, "
            "inas_jax.grid.cli; "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'optax', 'orbax', "
            "'tensorflow_datasets', 'tensorflow')); print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_function_is_longer_than_60_lines():
    long = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} is {n} lines")
    assert not long, "\n".join(long)


def test_one_main_block_per_file():
    many = [str(p) for p in ROOT.parent.rglob("*.py") if ".venv" not in p.parts and "runs" not in p.parts
            and p.read_text().count('if __name__ == "__main__"') > 1]
    assert not many, many
