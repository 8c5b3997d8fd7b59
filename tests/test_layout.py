"""The package layout holds: each subpackage imports only what its docstring allows, no module
is over 300 lines, and a run's state is created in one place."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "lrbs_tf"
# What each subpackage may import from lrbs_tf (besides itself, compat and settings), as the
# subpackages' docstrings say.
ALLOWED = {
    "core": set(),
    "distribute": set(),
    "data": {"core", "distribute"},
    "models": {"core", "data"},
    "probes": {"distribute", "core"},
    "theory": {"core"},
    "training": {"core", "data", "models", "probes", "distribute"},
    "sweeps": {"training", "models", "distribute", "core"},
    "figures": {"core", "data", "models", "probes", "training", "theory", "sweeps", "distribute"},
    "scaling": {"core", "data", "models", "probes", "training", "theory", "sweeps", "distribute"},
    "cli": {
        "core",
        "data",
        "models",
        "probes",
        "training",
        "theory",
        "sweeps",
        "figures",
        "scaling",
        "distribute",
    },
}
BASE = {"compat", "settings", "optimizers", "files", "progress"}


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def imported(path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lrbs_tf"):
            parts = node.module.split(".")
            if len(parts) > 1:
                out.add(parts[1])
            else:
                out.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("lrbs_tf."))
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_subpackages_import_only_what_they_may(package):
    for path in (PACKAGE / package).glob("*.py"):
        extra = imported(path) - ALLOWED[package] - BASE - {package, "__version__"}
        assert not extra, f"{path.relative_to(PACKAGE)} imports lrbs_tf.{sorted(extra)}"
    doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
    assert doc and "May import" in doc, f"lrbs_tf/{package}/__init__.py must say what it may import"


MAX_FUNCTION_LINES = 60
# Functions allowed to be longer, with the reason.
LONG_FUNCTIONS: dict = {}  # none today: name one here, with the reason, if it must be


def test_functions_are_at_most_60_lines():
    """One step per function: at most MAX_FUNCTION_LINES lines (the unit of size is the
    function; a module holds one concept, however long), but for the named exceptions."""
    long = set()
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    long.add(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert long - set(LONG_FUNCTIONS) == set()
    assert set(LONG_FUNCTIONS) - long == set(), "an exception no longer needed"


def test_the_state_of_a_run_is_created_in_one_place():
    """Every attribute of a Run is first set in its __init__ (no attribute appears later,
    depending on the order of calls)."""
    tree = ast.parse((PACKAGE / "training" / "run.py").read_text())
    (run,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Run"]
    methods = {f.name: f for f in run.body if isinstance(f, ast.FunctionDef)}

    def assigned(function):
        return {
            node.attr
            for node in ast.walk(function)
            if isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
        }

    created = assigned(methods["__init__"])
    for name, function in methods.items():
        assert assigned(function) <= created, f"Run.{name} creates {assigned(function) - created}"


def defined_names(path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def resolves(dotted: str) -> bool:
    """Does ``lrbs_tf.a.b.Name[.attr]`` name a module of the package, or something defined at
    the top of one (a class's methods are not checked)?"""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        base = PACKAGE.parent.joinpath(*parts[:i])
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return i == len(parts) or parts[i] in defined_names(path)
    return False


def test_docstring_references_name_what_exists():
    """A module moved in a re-layout leaves no `lrbs_tf.old.Name` behind in the docs."""
    import re

    role = re.compile(r":(?:mod|class|func|data|meth|attr):`~?(lrbs_tf(?:\.\w+)+)`")
    stale = sorted(
        f"{p.relative_to(PACKAGE)}: {m}"
        for p in modules()
        for m in role.findall(p.read_text())
        if not resolves(m)
    )
    assert not stale


def test_the_readme_module_table_names_every_module():
    """The README's library table lists each subpackage's modules (no module added silently)."""
    readme = (PACKAGE.parent / "README.md").read_text()
    rows = {
        line.split("`")[1].split(".")[1]: line
        for line in readme.splitlines()
        if line.startswith("| `lrbs_tf.")
    }
    missing = sorted(
        f"{package}/{path.stem}"
        for package in ALLOWED
        if package != "cli"
        for path in (PACKAGE / package).glob("*.py")
        if path.stem != "__init__" and f"`{path.stem}`" not in rows.get(package, "")
    )
    assert not missing


def module_imports() -> dict[str, set[str]]:
    """Module → the lrbs_tf modules it imports (at the top or inside functions)."""
    names = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts): p for p in modules()}
    names = {n.removesuffix(".__init__"): p for n, p in names.items()}
    graph = {}
    for name, path in names.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            found |= {t for t in targets if t in names and t != name and t != "lrbs_tf"}
        graph[name] = found
    return graph


def test_no_import_cycles():
    """No module imports one that imports it back, directly or through others (a package's
    __init__ re-exporting its modules is not an edge back into them)."""
    graph = module_imports()
    packages = {n for n in graph if (PACKAGE.parent / n.replace(".", "/") / "__init__.py").exists()}
    cycles = []

    def visit(node, path):
        for nxt in sorted(graph[node]):
            if nxt in packages and node.startswith(nxt + "."):
                continue  # importing a name from its own package's __init__
            if nxt == path[0]:
                cycles.append(" → ".join(path + [nxt]))
            elif nxt not in path and len(path) < 8:
                visit(nxt, path + [nxt])

    for start in sorted(graph):
        if start not in packages:
            visit(start, [start])
    assert not cycles, cycles[:5]
