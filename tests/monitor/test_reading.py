"""Reading runs: read-only (another user's folder, read-only media, a killed writer), one-line errors
that name the file, and the narrow reads findings and the report use (equal to the full tables)."""

import json
import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import diagnose as dg
from diagnose.cli import main
from diagnose.findings import base as findings_base
from diagnose.findings import evaluate
from diagnose.findings.base import RunData
from diagnose.monitor.store import RunFileError, RunWriter


def record(run_dir, steps=12, every=1, **kwargs):
    torch.manual_seed(0)
    model = dg.mlp(4, [8], 2)
    with torch.no_grad():
        model.fc1.bias[:6].fill_(-50.0)  # 6 of 8 units dead: something for the findings to find
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    with dg.watch(model, opt, run_dir, every=every, **kwargs) as run:
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            run.log(loss=loss)
    return model, x, y


def world_readable_copy(run_dir):
    """The run copied into a fresh folder that other users can read but not write."""
    base = Path(tempfile.mkdtemp())
    os.chmod(base, 0o755)
    target = base / "run"
    shutil.copytree(run_dir, target)
    return target


def _as_other_user(path, out, queue):
    try:
        if os.geteuid() == 0:
            os.setgid(65534)
            os.setuid(65534)  # nobody: may read the run, may not write a byte of its folder
        else:
            os.chmod(path, 0o555)
        run = dg.load_run(path)
        result = (run.meta["complete"], len(run.scalars()), len(run.layer_stats()),
                  sorted({f.kind for f in run.findings()}), dg.report(path, out=out).stat().st_size > 0,
                  sorted(p.name for p in Path(path).iterdir()))
        queue.put(("ok", result))
    except Exception as err:
        queue.put(("error", f"{type(err).__name__}: {err}"))


def read_as_other_user(path):
    """load_run, findings and report on ``path`` in a process that cannot write its folder."""
    # Once here first: the child may not read this Python's files (under /root) to import what
    # the report loads lazily; forked, it inherits the modules already imported.
    dg.report(path, out=Path(tempfile.mkdtemp()) / "warm.html")
    out_dir = Path(tempfile.mkdtemp())
    os.chmod(out_dir, 0o777)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_as_other_user, args=(str(path), str(out_dir / "r.html"), queue))
    proc.start()
    status, result = queue.get(timeout=300)
    proc.join(timeout=60)
    os.chmod(path, 0o755)
    assert status == "ok", result
    return result


@pytest.mark.slow
def test_a_finished_run_in_another_users_folder(tmp_path):
    record(tmp_path / "run")
    path = world_readable_copy(tmp_path / "run")
    complete, n_scalars, n_rows, kinds, wrote, files = read_as_other_user(path)
    assert complete and n_scalars == 12 and n_rows > 0 and "dead_units" in kinds and wrote
    assert files == ["run.sqlite"]  # the reader created nothing


KILLED = textwrap.dedent("""
    import os, signal, sys, torch, diagnose as dg
    model = dg.mlp(4, [8], 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = dg.watch(model, opt, sys.argv[1], every=1)
    for _ in range(20):
        opt.zero_grad(); model(torch.randn(8, 4)).sum().backward(); opt.step(); run.log(loss=1.0)
    run.flush(); run.writer.flush()
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.slow
def test_a_killed_run_in_another_users_folder(tmp_path):
    proc = subprocess.run([sys.executable, "-c", KILLED, str(tmp_path / "run")], timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert (tmp_path / "run" / "run.sqlite-wal").exists()  # its last commits are in the WAL only
    path = world_readable_copy(tmp_path / "run")
    complete, n_scalars, n_rows, *_ = read_as_other_user(path)
    assert not complete and n_scalars == 20 and n_rows == 20 * 3


@pytest.mark.slow
def test_a_run_on_read_only_media(tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("a read-only bind mount needs root and unshare")
    record(tmp_path / "run")
    with sqlite3.connect(tmp_path / "run" / "run.sqlite") as conn:  # a run left in WAL mode (older versions)
        conn.execute("PRAGMA journal_mode=WAL")
    assert not (tmp_path / "run" / "run.sqlite-wal").exists()
    reader = "import sys, diagnose as dg; r = dg.load_run(sys.argv[1]); print(len(r.scalars()), r.meta['complete'])"
    script = (f"mount --bind {tmp_path} {tmp_path} && mount -o remount,ro,bind {tmp_path} && "
              f"{sys.executable} -c \"{reader}\" {tmp_path / 'run'}")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    if "mount" in proc.stderr and proc.returncode != 0 and "diagnose" not in proc.stderr:
        pytest.skip(f"cannot bind-mount read-only here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["12", "True"]


def test_a_cleanly_closed_run_is_one_file(tmp_path):
    record(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.sqlite"]
    with sqlite3.connect(tmp_path / "run.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


# -- one-line errors that name the file --------------------------------------------------------
def one_line_error(capsys, *argv):
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_corrupt_store_names_the_file(tmp_path, capsys):
    (tmp_path / "run.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(RunFileError, match=r"run\.sqlite: cannot be read as a run store \(not an SQLite"):
        dg.load_run(tmp_path)
    err = one_line_error(capsys, "findings", str(tmp_path))
    assert str(tmp_path / "run.sqlite") in err


def test_an_empty_database_is_not_a_run(tmp_path, capsys):
    sqlite3.connect(tmp_path / "run.sqlite").execute("CREATE TABLE other (x)").connection.commit()
    with pytest.raises(RunFileError, match="no meta, scalars, layer_stats table"):
        dg.load_run(tmp_path)
    one_line_error(capsys, "report", str(tmp_path), "-o", str(tmp_path / "r.html"))


def test_corrupt_metadata_names_the_file_and_key(tmp_path):
    record(tmp_path, steps=2)
    with sqlite3.connect(tmp_path / "run.sqlite") as conn:
        conn.execute("UPDATE meta SET value = '{broken' WHERE key = 'model'")
    with pytest.raises(RunFileError, match=r"run\.sqlite: the metadata entry 'model' is not valid JSON"):
        _ = dg.load_run(tmp_path).meta


@pytest.fixture
def saved_run(tmp_path):
    record(tmp_path / "run", steps=4, save_model=True, sample=(torch.randn(30, 4), torch.randint(0, 2, (30,))))
    return tmp_path / "run"


def test_a_truncated_sample_degrades_the_report(saved_run, tmp_path, capsys):
    data = (saved_run / "sample.pt").read_bytes()
    (saved_run / "sample.pt").write_bytes(data[: len(data) // 2])
    html = dg.report(saved_run, out=tmp_path / "r.html").read_text()
    assert "The data sample saved with the run cannot be used" in html and "sample.pt: cannot be read" in html
    assert "truncated or corrupt" in html and 'id="summary"' in html
    err = one_line_error(capsys, "explain", str(saved_run), "--index", "0", "-o", str(tmp_path / "p.html"))
    assert "sample.pt" in err


@pytest.mark.parametrize("damage, message", [
    (lambda run: (run / "model.pt").write_bytes(b"\x00garbage" * 50), r"model\.pt: cannot be read as saved weights"),
    (lambda run: (run / "model.json").write_text('{"class": "Sequential", "builder": {"name": "mlp", "kwargs": '
                                                 '{"in_features": 4, "hidden": [16], "out_features": 2}}}'),
     r"model\.pt: the weights do not match the architecture of model\.json \(shapes differ: fc1\.weight"),
    (lambda run: (run / "model.json").write_text('{"class": "Sequential", "builder": {"name": "mlp", "kwargs": '
                                                 '{"in_features": 4, "hidden": [300000, 300000], "out_features": 2}}}'),
     r"model\.pt: the weights do not match"),
    (lambda run: (run / "model.json").write_text('{"builder": {"name": "mlp", "kwargs": {"in_features": 4, '
                                                 '"hidden": [4], "out_features": 2, "evil": 1}}}'),
     r"model\.json: the arguments of dg\.mlp must be"),
    (lambda run: (run / "model.json").write_text(json.dumps({"builder": {"name": "mlp", "kwargs": {
        "in_features": 4, "hidden": [8] * 100_000, "out_features": 2}}})),
     r"model\.json: hidden lists 100000 layers"),
    (lambda run: (run / "model.json").write_text("{not json"), r"model\.json: cannot be read as a model description"),
])
def test_a_damaged_model_degrades_the_report_with_a_banner(saved_run, tmp_path, capsys, damage, message):
    damage(saved_run)
    html = dg.report(saved_run, out=tmp_path / "r.html").read_text()
    assert "The model saved with the run cannot be rebuilt" in html and 'id="summary"' in html
    assert 'id="explanations"' not in html
    with pytest.raises(RunFileError, match=message):
        from diagnose.monitor.artifacts import load_model
        load_model(saved_run)
    err = one_line_error(capsys, "explain", str(saved_run), "--index", "0", "-o", str(tmp_path / "p.html"))
    assert str(saved_run) in err


def test_a_hostile_architecture_allocates_nothing(saved_run):
    import resource
    (saved_run / "model.json").write_text('{"builder": {"name": "mlp", "kwargs": {"in_features": 300000, '
                                          '"hidden": [300000, 300000], "out_features": 300000}}}')
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from diagnose.monitor.artifacts import load_model
    with pytest.raises(RunFileError, match="do not match"):
        load_model(saved_run)  # 270 billion parameters described; checked on the meta device
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KB


# -- narrow reads equal the full tables ---------------------------------------------------------
@pytest.fixture
def long_run(tmp_path):
    """A synthetic run: 300 steps x 6 layers, a statistic recorded for some layers only."""
    rng = np.random.default_rng(0)
    writer = RunWriter(tmp_path, {"steps": 300})
    for start in range(0, 300, 50):
        rows = []
        for step in range(start, start + 50):
            for j in range(6):
                row = {"step": step, "layer": f"l{j}", "grad_norm": float(rng.random() * 10 ** -j),
                       "weight_norm": 1.0 + j, "nonfinite": float(step == 123 and j == 2) * 3}
                if j % 2:
                    row["dead_frac"] = 0.9 if step > 150 else float(rng.random() * 0.1)
                rows.append(row)
        writer.write_layer_stats(rows)
    writer.write_scalars([(s, "loss", float(1 / (s + 1))) for s in range(300)])
    writer.close()
    return dg.load_run(tmp_path)


def test_layer_table_equals_the_pivot_of_layer_stats(long_run):
    full = long_run.layer_stats()
    for column in ("grad_norm", "dead_frac", "nonfinite"):
        expected = RunData(full, long_run.scalars(), {}).pivot(column)
        got = long_run.layer_table(column)
        pd.testing.assert_frame_equal(got, expected[got.columns], check_names=False)
    assert long_run.layer_table("no_such_statistic").empty
    assert long_run.layer_names() == [f"l{j}" for j in range(6)]


def test_partial_reads_of_layer_stats(long_run):
    part = long_run.layer_stats(columns=["grad_norm"], layers=["l1", "l3"], steps=(10, 19))
    full = long_run.layer_stats()
    expected = full[full.layer.isin(["l1", "l3"]) & full.step.between(10, 19)][["step", "layer", "grad_norm"]]
    assert list(part.columns) == ["step", "layer", "grad_norm", "rank"]
    pd.testing.assert_frame_equal(part.drop(columns="rank").reset_index(drop=True), expected.reset_index(drop=True))


def test_binned_reads_average_inside_the_store(long_run):
    tables, width = long_run.binned_layer_stats(["grad_norm", "dead_frac"], bins=30)
    assert width == 10 and set(tables) == {"grad_norm", "dead_frac"}
    full = long_run.layer_table("grad_norm")
    expected = full.groupby(np.arange(len(full)) // 10).mean()
    assert tables["grad_norm"].index.tolist() == list(range(0, 300, 10))
    np.testing.assert_allclose(tables["grad_norm"].to_numpy(), expected.to_numpy(), rtol=1e-12)
    assert list(tables["dead_frac"].columns) == ["l1", "l3", "l5"]
    small, width = long_run.binned_layer_stats(["grad_norm"], bins=1000)  # fewer steps than bins: exact
    assert width == 1 and small["grad_norm"].equals(full)


def test_last_values_and_rare_rows(long_run):
    full = long_run.layer_stats()
    last = long_run.last_layer_values(["grad_norm", "weight_norm", "dead_frac"])
    expected = full.groupby("layer")[["grad_norm", "weight_norm", "dead_frac"]].last()
    pd.testing.assert_frame_equal(last, expected.loc[last.index], check_names=False)
    rows = long_run.layer_rows("nonfinite")
    assert rows.to_dict("records") == [{"step": 123, "layer": "l2", "nonfinite": 3.0}]


def test_a_long_run_is_judged_on_evenly_spaced_steps_with_the_same_findings(long_run, monkeypatch):
    full = RunData(long_run.layer_stats(), long_run.scalars(), long_run.meta, long_run.scalar("loss"))
    monkeypatch.setattr(findings_base, "JUDGED_ROWS", 6 * 40)
    monkeypatch.setattr(findings_base, "MIN_JUDGED_STEPS", 40)
    thinned = RunData.from_run(long_run)
    assert (thinned.recorded_steps, thinned.judged_steps) == (300, 40)
    assert len(thinned.pivot("grad_norm")) == 40 and thinned.pivot("grad_norm").index[-1] == 299

    def summary(data):
        return sorted((f.kind, f.layer, f.severity) for f in evaluate(data).findings)
    assert summary(thinned) == summary(full) != []
    # NaN/Inf rows are read at every step, not thinned
    assert thinned.rows_above("nonfinite")["step"].tolist() == [123]
