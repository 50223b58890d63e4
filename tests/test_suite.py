"""The test suite itself: no test is silently replaced by another of the same name in its file, and no
test can hang on a child process."""
import ast
import pathlib

import pytest

TESTS = sorted(pathlib.Path(__file__).parent.glob("*.py"))


def _tree(path: pathlib.Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


@pytest.mark.parametrize("path", TESTS, ids=[p.name for p in TESTS])
def test_no_name_is_defined_twice_at_the_top_of_a_test_file(path):
    """A second `def test_x` in one file replaces the first, which then never runs."""
    names = [node.name for node in _tree(path).body
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    assert sorted({n for n in names if names.count(n) > 1}) == []


@pytest.mark.parametrize("path", TESTS, ids=[p.name for p in TESTS])
def test_every_wait_on_a_child_process_has_a_timeout(path):
    """subprocess.run/call/check_call/check_output and Popen.wait/communicate each pass timeout=."""
    untimed = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = node.func
            waits = (func.attr in ("run", "call", "check_call", "check_output")
                     and isinstance(func.value, ast.Name) and func.value.id == "subprocess") or \
                func.attr in ("wait", "communicate") and not node.args
            if waits and not any(k.arg == "timeout" for k in node.keywords):
                untimed.append(f"line {node.lineno}: {ast.unparse(node)[:80]}")
    assert untimed == []
