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
