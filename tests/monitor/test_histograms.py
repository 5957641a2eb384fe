"""Per-layer histograms: the bins against a NumPy oracle, the watch's counts against the tensors
plain hooks saw, the store's compact rows, ``run.histograms``, TensorBoard, and failures."""

import sqlite3
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

import diagnose as dg
from diagnose.monitor.statistics import histogram as H


def counts_of(tensor):
    return H.canonical(H.device_counts(tensor).cpu().numpy())


def as_columns(reference, frame):
    """Canonical counts summed onto a ``run.histograms`` frame's columns (found from its edges)."""
    edges = frame.attrs["edges"]
    starts = np.searchsorted(H.EDGES, edges[:-1])
    ends = np.searchsorted(H.EDGES, edges[1:])
    return np.array([reference[s:e].sum() for s, e in zip(starts, ends)])


# -- the bins ------------------------------------------------------------------------------------
def test_the_bins_match_numpy_on_values_from_subnormal_to_infinite():
    rng = np.random.default_rng(0)
    values = (rng.choice([-1.0, 1.0], 300_000) * 10.0 ** rng.uniform(-37, 37, 300_000)).astype(np.float32)
    values[:50], values[50:100] = 0.0, -0.0
    values[100:110], values[110:115], values[115:120] = np.inf, -np.inf, np.nan
    values[120:130] = np.float32(1e-44)  # subnormal, under 2^-128: the zero bin's code
    values[130:140] = np.float32(-5e-39)  # subnormal above 2^-128 = 2.9e-39: a bin of its own
    got = counts_of(torch.from_numpy(values))
    assert np.array_equal(got, H.reference_counts(values))
    assert got.sum() == len(values) - 5  # NaN is not binned
    assert got[H.ZERO_BIN] == 100 + 10 and got[0] == 5 and got[-1] == 10  # zeros, -inf, +inf


def test_edges_are_four_per_power_of_two_and_each_value_lands_between_its_edges():
    assert len(H.EDGES) == H.N_BINS + 1 and np.all(np.diff(H.EDGES) > 0)
    one = np.searchsorted(H.EDGES, 1.0, side="right") - 1
    assert H.EDGES[one:one + 5].tolist() == [1.0, 1.25, 1.5, 1.75, 2.0]
    assert H.EDGES[H.ZERO_BIN] == -(2.0 ** -128) and H.EDGES[H.ZERO_BIN + 1] == 2.0 ** -128
    for value in [1e-30, 3e-12, 0.2, 1.0, 1.2499999, 7.0, 123456.0, 1e37]:
        for v in (value, -value):
            got = counts_of(torch.tensor([v]))
            (index,) = np.flatnonzero(got)
            low, high = H.EDGES[index], H.EDGES[index + 1]
            # positive bins hold their left edge, negative ones their right edge
            assert (low <= v < high) if v > 0 else (low < v <= high), (v, low, high)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes_are_binned_as_their_float32_value(dtype):
    x = (torch.randn(5000, dtype=torch.float64) * 10.0 ** torch.randint(-4, 4, (5000,))).to(dtype)
    assert np.array_equal(counts_of(x), H.reference_counts(x.float().numpy()))


def test_non_contiguous_and_chunked_tensors_count_every_element_once():
    big = torch.randn(3, 700, 1000)  # 2.1M elements: 16 chunks
    views = [big, big.transpose(1, 2), big.permute(2, 0, 1)[::3], big[:, ::2, 5], torch.randn(0)]
    for view in views:
        assert np.array_equal(counts_of(view), H.reference_counts(view.contiguous().numpy())), view.shape


def test_the_temporaries_stay_under_a_sixteenth_of_the_tensor():
    for tensor in (torch.randn(4, 1 << 20), torch.randn(1 << 20, 4).t(), torch.randn(64, 64, 512).transpose(0, 2)):
        chunk = max(tensor.numel() // 16, 1 << 16)
        pieces = H._pieces(tensor, chunk)
        assert sum(p.numel() for p in pieces) == tensor.numel()
        assert max(p.numel() for p in pieces) <= chunk


def test_a_sparse_gradient_counts_its_implicit_zeros():
    sparse = torch.sparse_coo_tensor(torch.tensor([[0, 3, 3, 7]]), torch.tensor([1.0, 2.0, -1.0, -0.5]), (10,),
                                     check_invariants=True)
    got = counts_of(sparse)
    assert got.sum() == 10 and got[H.ZERO_BIN] == 7  # 3 stored (index 3 coalesced) + 7 implicit
    assert np.array_equal(got, H.reference_counts(sparse.to_dense().numpy()))


def test_trimmed_rows_round_trip_and_stay_small():
    counts = counts_of(torch.randn(100_000))
    first, trimmed = H.trim(counts)
    assert trimmed[0] > 0 and trimmed[-1] > 0 and counts[:first].sum() == 0
    assert np.array_equal(H.decode(H.encode(trimmed)), trimmed)
    # signed values span every tiny magnitude between -x and x, empty: compressed to ~3 bytes a used bin
    assert len(H.encode(trimmed)) < 4 * np.count_nonzero(trimmed) < 8 * len(trimmed) / 10


# -- the watch -----------------------------------------------------------------------------------
def model():
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(fc1=nn.Linear(6, 16), act1=nn.ReLU(), frozen=nn.Linear(16, 16),
                                    act2=nn.Tanh(), out=nn.Linear(16, 3)))
    net.frozen.requires_grad_(False)
    return net


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A watched run with histograms at steps 0, 4, 8 (every=2, histogram_every=4), step 4 with two
    micro-batches, and what plain hooks saw at those steps."""
    net = model()
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.05)
    seen = {}
    outputs = {}
    def keep(name):
        return lambda module, args, out: outputs.setdefault(name, []).append(out.detach().clone())
    handles = [m.register_forward_hook(keep(name)) for name, m in net.named_modules() if name]
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    run_dir = tmp_path_factory.mktemp("hist") / "run"
    with dg.watch(net, opt, run_dir, every=2, histogram_every=4):
        for step in range(10):
            outputs.clear()
            opt.zero_grad()
            halves = (slice(0, 16), slice(16, 32)) if step == 4 else (slice(0, 32),)
            for part in halves:
                (nn.functional.cross_entropy(net(x[part]), y[part]) / len(halves)).backward()
            grads = {n: [p.grad.clone() for p in m.parameters(recurse=False) if p.grad is not None]
                     for n, m in net.named_modules() if n}
            opt.step()
            seen[step] = {"act": {n: torch.cat([o.flatten() for o in outs]) for n, outs in outputs.items()},
                          "grad": {n: torch.cat([g.flatten() for g in gs]) for n, gs in grads.items() if gs},
                          "weight": {n: torch.cat([p.detach().flatten() for p in m.parameters(recurse=False)])
                                     for n, m in net.named_modules() if n and list(m.parameters(recurse=False))}}
    for handle in handles:
        handle.remove()
    return dg.load_run(run_dir), seen


@pytest.mark.parametrize("kind", H.KINDS)
def test_the_watch_counts_what_plain_hooks_saw(recorded, kind):
    run, seen = recorded
    layers = run.histogram_layers(kind)
    expected_layers = {"act": ["fc1", "act1", "frozen", "act2", "out"], "grad": ["fc1", "out"],
                       "weight": ["fc1", "frozen", "out"]}[kind]
    assert layers == expected_layers  # the frozen layer has weights but no gradient
    for layer in layers:
        frame = run.histograms(kind, layer)
        assert frame.index.tolist() == [0, 4, 8]
        for step in (0, 4, 8):
            values = seen[step][kind][layer]
            reference = H.reference_counts(values.numpy())
            assert np.array_equal(frame.loc[step].to_numpy(), as_columns(reference, frame)), (kind, layer, step)
            assert frame.loc[step].sum() == values.numel()  # step 4's two micro-batches add up


def test_histograms_frame_has_its_edges_and_zero_column(recorded):
    run, _ = recorded
    relu = run.histograms("act", "act1")
    edges, zero = relu.attrs["edges"], relu.attrs["zero_bin"]
    assert len(edges) == relu.shape[1] + 1 and np.all(np.diff(edges) > 0)
    assert zero == 0 and edges[0] < 0 < edges[1]  # a ReLU's outputs: zeros, then positive values only
    assert (relu[zero] > 0).all() and edges[-1] > 0
    weights = run.histograms("weight", "fc1")
    assert weights.attrs["zero_bin"] is None and weights.attrs["edges"][0] < 0 < weights.attrs["edges"][-1]
    assert run.histograms("weight", "fc1", steps=(4, 8)).index.tolist() == [4, 8]


def test_bad_arguments_name_what_was_expected(recorded, tmp_path):
    run, _ = recorded
    with pytest.raises(ValueError, match="kind: expected one of"):
        run.histograms("activation", "fc1")
    with pytest.raises(ValueError, match=r"layer: no grad histograms of 'fc_1' \(did you mean 'fc1'\?\)"):
        run.histograms("grad", "fc_1")
    with pytest.raises(TypeError, match="histograms: expected True or False"):
        dg.watch(model(), None, tmp_path / "x", histograms="yes")
    with pytest.raises(ValueError, match="histogram_every"):
        dg.watch(model(), None, tmp_path / "y", histogram_every=0)


def test_histograms_off_records_none_and_says_so(tmp_path, steps):
    net = dg.mlp(4, [6], 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with dg.watch(net, opt, tmp_path, every=1, histograms=False) as w:
        steps(net, opt, w, 3, rows=8)
    run = dg.load_run(tmp_path)
    assert run.meta["histograms"] is None and run.histogram_layers("act") == []
    with pytest.raises(ValueError, match="recorded no act histograms"):
        run.histograms("act", "fc1")


def test_the_default_cadence_is_every_200_steps_at_a_sampled_step(tmp_path, steps):
    net = dg.mlp(4, [6], 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with dg.watch(net, opt, tmp_path, every=30) as w:
        steps(net, opt, w, 500, rows=8)
    run = dg.load_run(tmp_path)
    assert run.histograms("weight", "fc1").index.tolist() == [0, 210, 420]  # sampled steps 200+ apart
    assert run.meta["histograms"] == {"every": 200, "kinds": ["act", "grad", "weight"]}


def test_rows_are_stored_trimmed_and_compressed(recorded):
    run, _ = recorded
    with sqlite3.connect(run.paths[0]) as conn:
        rows = conn.execute("SELECT first, counts FROM histograms").fetchall()
    assert rows and all(H.decode(blob)[0] > 0 and H.decode(blob)[-1] > 0 for _, blob in rows)
    assert max(len(blob) for _, blob in rows) < 600  # not 2041 x 8 bytes


def test_a_sparse_embedding_gradient_is_binned_with_its_zeros(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Embedding(50, 4, sparse=True), nn.Flatten(), nn.Linear(12, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randint(0, 50, (8, 3))
    with dg.watch(net, opt, tmp_path, every=1):
        for _ in range(2):
            opt.zero_grad()
            net(x).sum().backward()
            opt.step()
    frame = dg.load_run(tmp_path).histograms("grad", "0")
    touched = len(torch.unique(x)) * 4
    assert (frame.sum(axis=1) == 200).all() and (frame[frame.attrs["zero_bin"]] >= 200 - touched).all()


def test_a_failing_histogram_costs_only_the_histograms(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("injected")

    def train(run_dir):
        torch.manual_seed(0)
        net = dg.mlp(4, [6], 2)
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
        losses = []
        with dg.watch(net, opt, run_dir, every=1, histogram_every=1):
            for _ in range(4):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(net(x), y)
                loss.backward()
                opt.step()
                losses.append(loss.item())
        return losses

    expected = train(tmp_path / "a")
    monkeypatch.setattr(H, "device_counts", boom)
    assert train(tmp_path / "b") == expected
    run = dg.load_run(tmp_path / "b")
    assert "Histograms" in run.meta["errors"] and run.meta["missing_statistics"] == ["histograms"]
    assert run.meta["complete"] and run.histogram_layers("weight") == []
    assert run.layer_table("grad_norm").notna().all().all()


def test_tensorboard_gets_every_histogram(recorded, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run, seen = recorded
    events = EventAccumulator(str(run.to_tensorboard(tmp_path / "tb")), size_guidance={"histograms": 0})
    events.Reload()
    tags = events.Tags()["histograms"]
    assert {"activations/act1", "gradients/fc1", "weights/frozen"} <= set(tags)
    values = events.Histograms("weights/fc1")
    assert [v.step for v in values] == [0, 4, 8]
    for v in values:
        h = v.histogram_value
        assert h.num == seen[v.step]["weight"]["fc1"].numel() == sum(h.bucket)
        assert h.min <= seen[v.step]["weight"]["fc1"].min() and h.max >= seen[v.step]["weight"]["fc1"].max()


# -- CUDA (run where a GPU exists; CI has none) -----------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_counts_match_the_cpu_and_stay_exact_past_float32():
    x = torch.randn(3, 700, 1000) * 10.0 ** torch.randint(-20, 20, (3, 700, 1000))
    for view in (x, x.transpose(1, 2), x.half(), x.bfloat16()[:, ::3]):
        assert np.array_equal(counts_of(view.cuda()), counts_of(view)), view.dtype
    ones = torch.ones(2**25 + 3, device="cuda")  # histc counts in float32: chunks keep each call exact
    assert counts_of(ones).max() == 2**25 + 3


@cuda
def test_a_watched_cuda_step_counts_without_a_host_sync(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 3)).cuda()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    x, y = torch.randn(64, 6, device="cuda"), torch.randint(0, 3, (64,), device="cuda")
    weights = {}
    with dg.watch(net, opt, tmp_path, every=1, histogram_every=1, track_nonfinite=False, flush_every=10**6,
                  flush_seconds=1e9):
        for step in range(6):
            if step >= 2:  # after the first steps' one-time set-up: any sync in the hooks raises
                torch.cuda.set_sync_debug_mode("error")
            try:
                opt.zero_grad()
                nn.functional.cross_entropy(net(x), y).backward()
                opt.step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
            weights[step] = torch.cat([p.detach().flatten() for p in net[0].parameters()]).cpu().numpy()
    frame = dg.load_run(tmp_path).histograms("weight", "0")
    assert frame.index.tolist() == list(range(6))
    for step, values in weights.items():
        assert np.array_equal(frame.loc[step].to_numpy(), as_columns(H.reference_counts(values), frame))
