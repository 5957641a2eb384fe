"""Each example in examples/ runs from start to end and writes what it says."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.slow
@pytest.mark.parametrize("name, writes", [
    ("existing_loop", "reports/example-loop.html"),
    ("trainer_tabular", "reports/example-cart.html"),
    ("images_cnn", "reports/example-cnn.html"),
    ("explain_cart", None),
])
def test_example_runs(tmp_path, name, writes):
    proc = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if writes:
        html = (tmp_path / writes).read_text()
        assert 'id="explanations"' in html and 'id="layers"' in html
