import queue
import threading
import time

import matplotlib
import pytest
import torch

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _deterministic():
    """Each test starts from the same global RNG state."""
    torch.manual_seed(0)
    yield


def classifier_steps(model, opt, run, steps, rows=16, features=4, classes=2):
    """``steps`` SGD steps of ``model`` on random (rows x features) classification batches,
    logging the loss to the open watch ``run``."""
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(torch.randn(rows, features)),
                                                 torch.randint(0, classes, (rows,)))
        loss.backward()
        opt.step()
        run.log(loss=loss)


@pytest.fixture
def steps():
    """The shared training loop of the tests that only need a watched run to exist."""
    return classifier_steps


def _read_line(proc, deadline):
    """A child process's next stdout line, or None once ``deadline`` (time.monotonic) has passed or
    the child closed its output. A reader thread feeds a queue, so a silent child never blocks a
    test past its own deadline (a bare readline() would)."""
    if not hasattr(proc, "lines"):
        proc.lines = queue.Queue()

        def pump():
            for line in proc.stdout:
                proc.lines.put(line)
            proc.lines.put(None)  # end of output
        threading.Thread(target=pump, daemon=True).start()
    try:
        return proc.lines.get(timeout=max(0.0, deadline - time.monotonic()))
    except queue.Empty:
        return None


@pytest.fixture
def read_line():
    """``read_line(proc, deadline)``: see ``_read_line``."""
    return _read_line
