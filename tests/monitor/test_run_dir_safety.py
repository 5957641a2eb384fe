"""Nothing the project did not create is deleted, and one process writes a run at a time."""

import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import diagnose as dg
from diagnose.cli import main
from diagnose.monitor.lock import RunLockedError


def train(run_dir, steps=3, **kwargs):
    model = dg.mlp(3, [4], 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with dg.watch(model, opt, run_dir, every=1, **kwargs) as run:
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(torch.randn(8, 3)), torch.randint(0, 2, (8,))).backward()
            opt.step()
            run.log(loss=1.0)
    return model


def user_files(folder):
    """A user's project: files beside and inside the folder that will hold a run."""
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "train.py").write_text("print('the user's training script')")
    (folder / "data.csv").write_text("a,b\n1,2\n")
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def unchanged(files):
    return all(p.is_file() and p.read_bytes() == content for p, content in files.items())


def test_overwrite_replaces_only_the_runs_own_files(tmp_path):
    train(tmp_path, steps=3, save_model=True, sample=torch.randn(5, 3))
    assert {p.name for p in tmp_path.iterdir()} == {"run.sqlite", "model.pt", "model.json", "sample.pt",
                                                   "sample.json"}
    train(tmp_path, steps=1, overwrite=True)
    assert {p.name for p in tmp_path.iterdir()} == {"run.sqlite"}  # the old artifacts went with the old run
    assert dg.load_run(tmp_path).scalars()["step"].tolist() == [0]


def test_overwrite_refuses_a_folder_holding_anything_else(tmp_path):
    train(tmp_path)
    files = user_files(tmp_path)
    with pytest.raises(FileExistsError, match=r"did not write \(data.csv, src/\)"):
        train(tmp_path, overwrite=True)
    assert unchanged(files) and dg.load_run(tmp_path).scalars()["step"].tolist() == [0, 1, 2]


def test_a_model_file_the_run_did_not_save_is_the_users(tmp_path):
    train(tmp_path)  # saved no model
    (tmp_path / "model.pt").write_bytes(b"the user's own checkpoint")
    with pytest.raises(FileExistsError, match="model.pt"):
        train(tmp_path, overwrite=True)
    assert (tmp_path / "model.pt").read_bytes() == b"the user's own checkpoint"


def test_demo_never_empties_a_folder_it_did_not_create(tmp_path, capsys, monkeypatch):
    # the case: `diagnose demo --run-dir . --overwrite` in a project folder with a run
    monkeypatch.chdir(tmp_path)
    args = ["demo", "--epochs", "1", "--rows", "300", "--quiet", "--out", str(tmp_path / "d.html")]
    assert main([*args, "--run-dir", "."]) == 0
    files = user_files(tmp_path)
    assert main([*args, "--run-dir", ".", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "data.csv" in err and "src/" in err and "Traceback" not in err
    assert unchanged(files) and dg.load_run(tmp_path).meta["complete"]


def test_plain_demo_replaces_only_its_own_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["demo", "--epochs", "1", "--rows", "300", "--quiet", "--out", str(tmp_path / "d.html")]
    assert main(args) == 0
    assert main(args) == 0  # the demo's own folder: replaced without --overwrite
    note = tmp_path / "runs" / "demo" / "notes.txt"
    note.write_text("mine")
    assert main(args) == 2 and "notes.txt" in capsys.readouterr().err
    assert note.read_text() == "mine"
    # a run the demo did not write, in the demo's folder, needs --overwrite
    note.unlink()
    train(tmp_path / "runs" / "demo", overwrite=True)
    assert main(args) == 2 and "the demo did not write" in capsys.readouterr().err


HOLDER = textwrap.dedent("""
    import sys, torch, diagnose as dg
    model = dg.mlp(3, [4], 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with dg.watch(model, opt, sys.argv[1], resume=sys.argv[2] == "resume") as run:   # every=50
        for _ in range(5):
            opt.zero_grad(); model(torch.randn(4, 3)).sum().backward(); opt.step()
        run.flush(); run.writer.flush()
        print("ready", flush=True)
        sys.stdin.readline()  # hold the run open until the parent says so
""")


@pytest.fixture
def live_writer(tmp_path, read_line):
    """A process writing tmp_path/run, holding it open until the test ends."""
    procs = []

    def start(mode="new"):
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "run"), mode],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        line = read_line(proc, time.monotonic() + 120)  # once the run is open and written
        assert line is not None and line.strip() == "ready"
        return proc
    yield start
    for proc in procs:
        proc.stdin.close()
        proc.wait(timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize("kwargs", [{"resume": True}, {"overwrite": True}, {}])
def test_a_second_writer_is_refused_naming_the_live_process(tmp_path, live_writer, kwargs):
    proc = live_writer()
    model = dg.mlp(3, [4], 2)
    with pytest.raises(RunLockedError, match=f"being written by process {proc.pid} on "):
        dg.watch(model, None, tmp_path / "run", **kwargs)
    assert not model._forward_hooks and not model._forward_pre_hooks
    run = dg.load_run(tmp_path / "run")
    assert run.writer["pid"] == proc.pid and run.state().startswith(f"still being written by process {proc.pid}")
    assert run.scalars().empty and len(run.layer_stats()) > 0  # the live writer's steps are intact


@pytest.mark.slow
def test_two_processes_resuming_one_run_take_turns(tmp_path, live_writer):
    first = live_writer("resume")
    child = subprocess.run([sys.executable, "-c", HOLDER, str(tmp_path / "run"), "resume"], input="\n",
                           capture_output=True, text=True, timeout=120)
    assert child.returncode != 0 and f"process {first.pid}" in child.stderr
    first.stdin.write("\n")
    first.stdin.flush()
    first.wait(timeout=60)
    # once the first is done, resuming continues its step count (5, not the last sampled step + 1)
    child = subprocess.run([sys.executable, "-c", HOLDER, str(tmp_path / "run"), "resume"], input="\n",
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    run = dg.load_run(tmp_path / "run")
    assert sorted(run.layer_stats()["step"].unique()) == [0, 5] and run.meta["steps"] == 10


def test_a_second_watch_in_the_same_process_is_refused(tmp_path):
    model = dg.mlp(3, [4], 2)
    with dg.watch(model, None, tmp_path):
        with pytest.raises(RunLockedError, match=f"process {os.getpid()}"):
            dg.watch(dg.mlp(3, [4], 2), None, tmp_path, resume=True)


def test_default_run_dirs_started_in_the_same_second_are_distinct(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "run-fixed")
    with dg.watch(dg.mlp(3, [4], 2)) as a, dg.watch(dg.mlp(3, [4], 2)) as b:
        assert (a.run_dir.name, b.run_dir.name) == ("run-fixed", "run-fixed-1")
    with dg.watch(dg.mlp(3, [4], 2)) as c:  # the first two are finished: still a new one
        assert c.run_dir.name == "run-fixed-2"


STARTER = textwrap.dedent("""
    import sys, time, torch, diagnose as dg
    time.strftime = lambda fmt, *a: "run-same-second"   # both processes get the same name
    while time.time() < float(sys.argv[1]):               # start together
        pass
    with dg.watch(dg.mlp(3, [4], 2)) as run:
        run.step()
    print(run.run_dir.name)
""")


@pytest.mark.slow
def test_default_run_dirs_of_two_processes_started_together_are_distinct(tmp_path):
    go = time.time() + 8  # both children have imported torch by then
    procs = [subprocess.Popen([sys.executable, "-c", STARTER, str(go)], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [proc.communicate(timeout=120) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err for _, err in outs]
    assert sorted(out.strip() for out, _ in outs) == ["run-same-second", "run-same-second-1"]
    for name in ("run-same-second", "run-same-second-1"):
        assert dg.load_run(tmp_path / "runs" / name).meta["complete"]


def test_trainer_overwrite_and_run_meta(tmp_path):
    X, y = torch.randn(32, 3), torch.randint(0, 2, (32,))
    kwargs = dict(run_dir=str(tmp_path), progress=False, run_meta={"experiment": "a"})
    dg.Trainer(dg.mlp(3, [4], 2), "sgd", **kwargs).fit((X, y), epochs=1)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        dg.Trainer(dg.mlp(3, [4], 2), "sgd", **kwargs).fit((X, y), epochs=1)
    dg.Trainer(dg.mlp(3, [4], 2), "adam", overwrite=True, **kwargs).fit((X, y), epochs=1)
    meta = dg.load_run(tmp_path).meta
    assert meta["optimizer"]["name"] == "adam" and meta["experiment"] == "a"
