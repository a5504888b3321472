"""The layers import only downwards (schemas <- transforms <- trainer <- pipelines: the trainer uses the shared
embedding code in transforms/embedding, never the CLI) and no module import cycle exists. Imports inside
functions count too."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"schemas": 0, "transforms": 1, "trainer": 2, "pipelines": 3}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    package = "cmtp." + package
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
    found = {m[len("cmtp."):] if m.startswith("cmtp.") else m for m in found}  # the installed names
    return {m for m in found if m.split(".")[0] in LAYERS}


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for layer in LAYERS for p in (ROOT / layer).rglob("*.py")}


def test_no_layer_imports_a_higher_one():
    wrong = []
    for name, path in project_modules().items():
        for imported in imports_of(path):
            if LAYERS[imported.split(".")[0]] > LAYERS[name.split(".")[0]]:
                wrong.append(f"{name} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_between_modules():
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports_of(path):
            while imported and imported not in modules:  # `from pkg import name` where name is not a module
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)  # a module importing its own package's __init__ is not a cycle here
        graph[name] = targets
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(cycles)


def test_the_wheel_installs_one_top_level_name(tmp_path):
    """What `pip install cmtp` puts at the top of site-packages: `cmtp` and its dist-info, nothing generic."""
    import shutil
    import subprocess
    import sys
    import zipfile

    source = tmp_path / "src"  # a clean copy: setuptools' build/ folder would keep modules deleted since
    source.mkdir()
    for name in ["pyproject.toml", "README.md", "cmtp", *LAYERS]:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                            if (ROOT / name).is_dir() else {}))
    base = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(source)]
    proc = subprocess.run(base + ["--no-build-isolation"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:  # an older setuptools in the venv: let pip build with the declared backend
        proc = subprocess.run(base, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("cmtp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"cmtp", wheel.name.split("-py3")[0] + ".dist-info"}
    for module in ["cmtp/schemas/manifest.py", "cmtp/transforms/embedding/registry.py", "cmtp/trainer/loop.py",
                   "cmtp/pipelines/cli.py", "cmtp/transforms/extract/blocklist_zh.txt"]:
        assert module in names, module
