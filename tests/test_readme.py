"""The README's Python blocks run as written, in order, as one program (a new user tries them so)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_blocks():
    assert len(python_blocks()) >= 5


@pytest.mark.slow
def test_the_readme_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/, reports/ and out/ are written here
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(python_blocks()):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as err:
            raise AssertionError(f"README python block {i + 1} fails: {type(err).__name__}: {err}\n{block}") from err
    assert (tmp_path / "reports" / "exp1.html").is_file() and (tmp_path / "runs" / "exp2" / "run.sqlite").is_file()
    # run twice in a row, as a user re-running it would: no FileExistsError
    for i, block in enumerate(python_blocks()[:1]):
        exec(compile(block, f"README.md python block {i + 1} (again)", "exec"), namespace)
