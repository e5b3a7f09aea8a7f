"""The import rules of docs/architecture.md: arrows point down, no cycles, no private reaches, no harness imports."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "backup_tools"
# Layers, lowest first; a package imports only from its own package or from lower layers.
LAYERS = (("core",), ("pg",), ("security",), ("repo",), ("backup", "wal"), ("restore",), ("lifecycle",), ("monitor",),
          ("cli",))  # fmt: skip
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
HARNESS = ("fixtures", "drills", "reports", "tests")
# The repository's own modules (repo/, the S3 backend in repo/s3/) share S3Repository's client and key helpers.
BACKEND_INTERNALS = "backup_tools.repo."
# What the rules allow outside a package's own room, with the reason (empty: no exceptions left).
THIRD_PARTY_ROOMS = {
    "argparse": ("cli",),  # only cli/ parses argv
    "boto3": ("repo", "security", "monitor"),  # only repo/ knows S3; security/keys: KMS; monitor/cloud: RDS
    "botocore": ("repo", "security", "monitor"),
}


def module_name(path: Path) -> str:
    """backup_tools/repo/s3/io.py -> backup_tools.repo.s3.io (a package's __init__ is the package)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def area(module: str) -> str:
    """The package (layer name) a backup_tools module belongs to: core for the top-level modules."""
    parts = module.split(".")
    if parts[1:2] == ["__main__"]:
        return "cli"  # `python -m backup_tools` is the CLI's entry point
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else "core"


@cache
def modules() -> dict[str, ast.Module]:
    """Every module of backup_tools, parsed."""
    return {module_name(p): ast.parse(p.read_text(), filename=str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def imports(tree: ast.Module) -> list[tuple[str, list[str], int]]:
    """(imported module, names imported from it, line) for every import, also those inside functions."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [a.name for a in node.names]
            found.append((node.module, names, node.lineno))
            # `from backup_tools.repo import s3` imports the module backup_tools.repo.s3
            found += [(f"{node.module}.{n}", [], node.lineno) for n in names if f"{node.module}.{n}" in modules()]
    return found


def internal_edges() -> list[tuple[str, str, list[str], int]]:
    """(importer, imported backup_tools module, names, line)."""
    return [(me, target, names, line) for me, tree in modules().items() for target, names, line in imports(tree)
            if target.split(".")[0] == "backup_tools" and target != "backup_tools"]  # fmt: skip


def test_the_layers_name_every_package_of_backup_tools():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(RANK) - {"core"}, "add the new package to LAYERS here and in docs/architecture.md"


def test_arrows_point_down():
    upward = [f"{me}:{line} imports {target} ({area(me)} -> {area(target)})"
              for me, target, _, line in internal_edges()
              if area(me) != area(target) and RANK[area(target)] >= RANK[area(me)]]  # fmt: skip
    assert upward == [], "an import points up or sideways; move the shared piece down (see docs/architecture.md)"


def package_of(module: str) -> str:
    """The top-level package a module belongs to (backup_tools.repo.s3.io -> backup_tools.repo); core modules alone."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycles_between_packages():
    """Between packages and core modules; the modules of one package (repo with repo/s3) may import each other."""
    graph: dict[str, set[str]] = {package_of(m): set() for m in modules()}
    for me, target, _, _ in internal_edges():
        if target in modules() and package_of(target) != package_of(me):
            graph[package_of(me)].add(package_of(target))
    cycles = [sorted(c) for c in strongly_connected(graph) if len(c) > 1]
    assert cycles == []


def test_no_private_names_imported_across_modules():
    reaches = [f"{me}:{line} imports {', '.join(private)} from {target}"
               for me, target, names, line in internal_edges()
               if (private := [n for n in names if n.startswith("_") and not n.startswith("__")])]  # fmt: skip
    assert reaches == [], "make the name public (and documented) or move the code that needs it"


def test_no_private_attributes_reached_on_other_objects():
    reaches: dict[str, set[str]] = {}
    for me, tree in modules().items():
        if me.startswith(BACKEND_INTERNALS):
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls", "argparse"))):  # fmt: skip
                reaches.setdefault(me, set()).add(node.attr)
    assert reaches == {}, "use (or add) a public method of that object instead"


def test_only_repo_asks_which_backend_a_repository_is():
    found = [f"{me}:{node.lineno}" for me, tree in modules().items() if area(me) != "repo" for node in ast.walk(tree)
             if isinstance(node, ast.Name) and node.id in ("FileRepository", "S3Repository")]  # fmt: skip
    assert found == [], "use a Repository capability (local_path(), placed() ...) instead of the backend's type"


def test_one_pg_ctl_wrapper():
    """backup_tools and fixtures start and stop servers through backup_tools/pg/server.py only."""
    found = [f"{path.relative_to(ROOT)}:{node.lineno}"
             for path in sorted([*PACKAGE.rglob("*.py"), *(ROOT / "fixtures").rglob("*.py")])
             if path != PACKAGE / "pg" / "server.py"
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "tool"
             and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "pg_ctl"]  # fmt: skip
    assert found == [], "use backup_tools.pg.server (pg_ctl, start, stop, postmaster_pid, log_tail)"


def test_library_code_logs_instead_of_printing_by_default():
    """A `log=print` default writes to stdout, which only cli/ decides about; library defaults use logging."""
    found = [f"{me}:{node.lineno}" for me, tree in modules().items() if area(me) != "cli" for node in ast.walk(tree)
             if isinstance(node, ast.Name) and node.id == "print" and isinstance(node.ctx, ast.Load)
             and not any(isinstance(c, ast.Call) and c.func is node for c in ast.walk(tree))]  # fmt: skip
    assert found == [], "default to a module logger (logger.info), let the CLI pass its own log"


def test_library_log_parameters_default_to_logging():
    """A library function's `log=` defaults to a logger (logger.info), never None or print: output is the CLI's call."""
    found = []
    for me, tree in modules().items():
        for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)):
            args = fn.args
            pairs = list(zip(args.kwonlyargs, args.kw_defaults, strict=True)) + list(
                zip(args.args[len(args.args) - len(args.defaults) :], args.defaults, strict=True)
            )
            found += [f"{me}:{fn.lineno} {fn.name}(log={ast.unparse(d)})" for a, d in pairs if a.arg == "log"
                      and d is not None and not (isinstance(d, ast.Attribute) and d.attr in ("info", "debug"))]  # fmt: skip
    assert found == [], "default log= to the module's logger (logger.info); the CLI passes its own writer"


def test_backup_tools_never_imports_the_harness():
    found = [f"{me}:{line} imports {target}" for me, tree in modules().items() for target, _, line in imports(tree)
             if target.split(".")[0] in HARNESS]  # fmt: skip
    assert found == []


def defined_names(tree: ast.Module) -> set[str]:
    """Names a module defines or imports at its top level (what `from module import name` can take)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def test_every_backup_tools_name_imported_anywhere_exists():
    """Also imports inside functions, in fixtures/drills/reports/tests: moved or renamed names fail here, not late."""
    missing = []
    for path in sorted(p for d in ("backup_tools", *HARNESS, "bench") for p in (ROOT / d).rglob("*.py")):
        for target, names, line in imports(ast.parse(path.read_text())):
            if target.split(".")[0] != "backup_tools":
                continue
            if target not in modules():
                missing.append(f"{path.relative_to(ROOT)}:{line}: no module {target}")
                continue
            have = defined_names(modules()[target])
            missing += [f"{path.relative_to(ROOT)}:{line}: {target} has no {n}" for n in names
                        if n not in have and f"{target}.{n}" not in modules()]  # fmt: skip
    assert missing == [], "see docs/architecture.md for where modules and names went"


@pytest.mark.parametrize("library", sorted(THIRD_PARTY_ROOMS))
def test_third_party_libraries_stay_in_their_rooms(library):
    rooms = THIRD_PARTY_ROOMS[library]
    found = [f"{me}:{line} imports {target}" for me, tree in modules().items() for target, _, line in imports(tree)
             if target.split(".")[0] == library and area(me) not in rooms]  # fmt: skip
    assert found == [], f"{library} belongs in {', '.join(rooms)}/"


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative enough for a package of ~60 modules)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            out.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


AREAS = ("UsageError", "RepositoryError", "IntegrityCheckFailed", "EncryptionKeyError", "RecoveryError", "ToolError")


def test_errors_live_in_errors_py_under_one_base_per_area():
    """backup_tools raises only errors.py's classes, and each of those belongs to an area (usage, repository ...)."""
    import backup_tools.errors as errors

    ours = {n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, errors.BackupToolsError)}
    elsewhere = [f"{name}:{node.lineno} class {node.name}" for name, tree in modules().items()
                 if name != "backup_tools.errors" for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
                 and any(isinstance(b, ast.Name) and b.id in ours for b in node.bases)]  # fmt: skip
    assert elsewhere == [], f"define errors in backup_tools/errors.py: {elsewhere}"
    bases = tuple(getattr(errors, a) for a in AREAS)
    orphans = sorted(n for n in ours - {"BackupToolsError"} if not issubclass(getattr(errors, n), bases))
    assert orphans == [], f"errors without an area base ({', '.join(AREAS)}): {orphans}"
    assert "IntegrityError" not in ours, "IntegrityError is psycopg's name; ours is IntegrityCheckFailed"
