"""Every test that needs a CUDA GPU carries the `cuda` mark: `make gpu-check` selects the CUDA
tests by it (`pytest -m cuda` over tests/), and tests/conftest.py skips them by it where no GPU
is visible. Read from the test sources, so a new CUDA test without the mark fails here on any
machine, GPU or not."""

import ast
import textwrap

import pytest
from conftest import REPO

TESTS = REPO / "tests"


def is_cuda_mark(node: ast.expr) -> bool:
    """`pytest.mark.cuda`, called or not."""
    return ast.unparse(node.func if isinstance(node, ast.Call) else node) == "pytest.mark.cuda"


def marks_of(value: ast.expr) -> list[ast.expr]:
    """The marks a `pytestmark = ...` assignment gives: one mark or a list of them."""
    return list(value.elts) if isinstance(value, ast.List | ast.Tuple) else [value]


def skips_without_cuda(decorator: ast.expr) -> bool:
    """A `pytest.mark.skipif(...)` whose condition reads `torch.cuda.is_available()`."""
    return (
        isinstance(decorator, ast.Call)
        and ast.unparse(decorator.func) == "pytest.mark.skipif"
        and "torch.cuda.is_available" in ast.unparse(decorator)
    )


def puts_work_on_cuda(node: ast.AST) -> bool:
    """The CUDA device named in a test's body: the override `device=cuda`, a `device="cuda"`
    (or "cuda:N") argument, `torch.device("cuda")`, `.to("cuda")` or `.cuda()`."""
    if isinstance(node, ast.Constant):
        return node.value == "device=cuda"
    if isinstance(node, ast.keyword):
        value = node.value
        return (
            node.arg == "device"
            and isinstance(value, ast.Constant)
            and isinstance(value.value, str)
            and value.value.split(":")[0] == "cuda"
        )
    if isinstance(node, ast.Call):
        name = ast.unparse(node.func)
        first = node.args[0] if node.args else None
        on_cuda = (
            isinstance(first, ast.Constant)
            and isinstance(first.value, str)
            and first.value.split(":")[0] == "cuda"
        )
        return name.endswith(".cuda") or (
            on_cuda and (name == "torch.device" or name.endswith(".to"))
        )
    return False


def needs_cuda(test: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    body = [node for stmt in test.body for node in ast.walk(stmt)]
    return any(map(skips_without_cuda, test.decorator_list)) or any(map(puts_work_on_cuda, body))


def unmarked_cuda_tests(source: str) -> tuple[list[str], list[str]]:
    """(the tests of a module that need CUDA, those of them without the `cuda` mark), a test
    being marked by its own decorator, its class's, or the module's `pytestmark`."""
    tree = ast.parse(source)
    module_marked = any(
        is_cuda_mark(mark)
        for stmt in tree.body
        if isinstance(stmt, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in stmt.targets)
        for mark in marks_of(stmt.value)
    )
    found, unmarked = [], []

    def visit(body: list[ast.stmt], prefix: str, marked: bool) -> None:
        for stmt in body:
            if isinstance(stmt, ast.ClassDef) and stmt.name.startswith("Test"):
                class_marked = marked or any(map(is_cuda_mark, stmt.decorator_list))
                visit(stmt.body, f"{prefix}{stmt.name}::", class_marked)
            elif (
                isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef)
                and stmt.name.startswith("test")
                and needs_cuda(stmt)
            ):
                found.append(prefix + stmt.name)
                if not (marked or any(map(is_cuda_mark, stmt.decorator_list))):
                    unmarked.append(prefix + stmt.name)

    visit(tree.body, "", module_marked)
    return found, unmarked


def test_every_cuda_test_carries_the_cuda_mark() -> None:
    found, unmarked = [], []
    for path in sorted(TESTS.glob("test_*.py")):
        module_found, module_unmarked = unmarked_cuda_tests(path.read_text())
        found += [f"{path.name}::{name}" for name in module_found]
        unmarked += [f"{path.name}::{name}" for name in module_unmarked]
    assert found, "no CUDA test found under tests/: the scan reads nothing"
    assert not unmarked, f"CUDA tests without @pytest.mark.cuda: {unmarked}"


SKIPIF = '@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")'


@pytest.mark.parametrize(
    ("decorators", "body"),
    [
        ([SKIPIF], "pass"),
        ([], 'train(cfg("device=cuda"), tmp_path)'),
        ([], 'x = torch.zeros(3, device="cuda:0")'),
        ([], 'model.to("cuda")'),
        ([], 'device = torch.device("cuda")'),
        ([], "model.cuda()"),
    ],
    ids=["skipif", "override", "device argument", "to", "torch.device", ".cuda()"],
)
def test_a_cuda_test_without_the_mark_is_found(decorators: list[str], body: str) -> None:
    test = "\n".join([*decorators, "def test_new(tmp_path):", f"    {body}"])
    assert unmarked_cuda_tests(test) == (["test_new"], ["test_new"])
    marked = unmarked_cuda_tests("@pytest.mark.cuda\n" + test)
    assert marked == (["test_new"], [])
    in_class = "@pytest.mark.cuda\nclass TestGpu:\n" + textwrap.indent(test, "    ")
    assert unmarked_cuda_tests(in_class) == (["TestGpu::test_new"], [])
    in_module = "pytestmark = [pytest.mark.integration, pytest.mark.cuda]\n" + test
    assert unmarked_cuda_tests(in_module) == (["test_new"], [])


@pytest.mark.parametrize(
    "body",
    [
        'run(["--device", "cuda:1"])  # a command line parsed, nothing run on the GPU',
        'assert "device=cuda:1" in overrides',
        'train(cfg("device=cpu", "cuda_graph=false"), tmp_path)',
        "if torch.cuda.is_available():\n        pass",
    ],
    ids=["driver argument", "override compared", "cuda_graph off", "GPU-aware CPU test"],
)
def test_a_cpu_test_is_not_taken_for_a_cuda_test(body: str) -> None:
    assert unmarked_cuda_tests(f"def test_new(tmp_path):\n    {body}\n") == ([], [])
