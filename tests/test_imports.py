"""The package's shape: lazy public names, and imports that flow one way between stages."""

import ast
import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import diagnose as dg

PACKAGE = Path(dg.__file__).parent
HEAVY = ("shap", "captum", "optuna", "matplotlib", "sklearn", "scipy", "jinja2")

WATCH_ONLY = textwrap.dedent("""
    import sys, tempfile, time
    start = time.perf_counter()
    import torch
    torch_s = time.perf_counter() - start
    import diagnose as dg
    model = dg.mlp(4, [8], 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with dg.watch(model, opt, tempfile.mkdtemp() + "/run", every=1) as run:
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 2, (8,))).backward()
            opt.step()
            run.log(loss=1.0)
    print(" ".join(m for m in {heavy!r} if m in sys.modules) or "none")
""")


def test_watch_alone_imports_no_heavy_library():
    proc = subprocess.run([sys.executable, "-c", WATCH_ONLY.format(heavy=HEAVY)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == "none", f"import diagnose + dg.watch loaded: {proc.stdout.strip()}"


def test_every_public_name_resolves_and_same_named_functions_stay_functions():
    # the subpackages loaded, as any import of them does: they must not hide the same-named functions
    for module in ("diagnose.explain.api", "diagnose.findings.base", "diagnose.report.build", "diagnose.tune.study"):
        importlib.import_module(module)
    assert sorted(dg._PUBLIC) == sorted(n for n in dg.__all__ if n != "__version__")
    for name in dg.__all__:
        assert getattr(dg, name) is not None, name
    for name in ("explain", "findings", "report", "tune"):
        assert callable(getattr(dg, name)) and getattr(dg, name).__name__ == name, name
    assert "watch" in dir(dg)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dg.nope  # noqa: B018 - the access is the test


# Stages, in the order data flows: a module may import its own stage and those before it.
# trainer and monitor -> findings -> explain -> tune and preflight -> report -> integrations -> the
# facade -> cli.
STAGES = {
    "diagnose.validate": 0, "diagnose.registry": 0, "diagnose.models": 0, "diagnose.datasets": 0,
    "diagnose.monitor": 1, "diagnose.trainer": 2, "diagnose.findings": 3, "diagnose.explain": 4,
    "diagnose.tune": 5, "diagnose.preflight": 5,
    "diagnose.report": 6, "diagnose.integrations": 7, "diagnose": 8, "diagnose.cli": 9,
}
# The one documented back-edge: Run.findings() (monitor -> findings), a convenience for users.
BACK_EDGES = {("diagnose.monitor.run", "diagnose.findings")}


def stage(module: str) -> int:
    best = max((k for k in STAGES if module == k or module.startswith(k + ".")), key=len)
    return STAGES[best]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every diagnose module ``path`` imports, at the top or inside functions (not TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    checking = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in checking:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "diagnose"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "diagnose":
            for alias in node.names:  # "from diagnose import validate" imports a module
                sub = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").exists() or \
                    (PACKAGE.parent / Path(*sub.split("."))).is_dir()
                # __version__ is a constant of the facade, not a dependency on it
                found.add(sub if is_module else "diagnose.validate" if alias.name == "__version__" else node.module)
    return found


def violations(modules: dict[str, Path]) -> list[str]:
    """Upward imports among ``modules`` (module name -> file)."""
    found = []
    for name, path in modules.items():
        for imported in imports(path):
            if stage(imported) > stage(name) and (name, imported) not in BACK_EDGES:
                found.append(f"{name} (stage {stage(name)}) imports {imported} (stage {stage(imported)})")
    return found


PACKAGE_MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_stages_import_downward_only():
    assert not violations(PACKAGE_MODULES), "\n".join(violations(PACKAGE_MODULES))
    edges = {(name, imported) for name, path in PACKAGE_MODULES.items() for imported in imports(path)}
    assert BACK_EDGES <= edges  # the documented back-edge is real (else drop it from the list)


def test_the_stage_check_catches_an_upward_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from diagnose.report import report\n")  # even inside a function
    assert violations({"diagnose.monitor.probe": probe}) == [
        "diagnose.monitor.probe (stage 1) imports diagnose.report (stage 6)"]
