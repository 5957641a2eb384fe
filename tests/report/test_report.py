"""The HTML report and the report/explain commands."""

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import diagnose as dg
from diagnose.cli import main


def no_external_urls(html: str) -> None:
    # every src/href is inline data or an in-page anchor: the page works offline
    for url in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert url.startswith(("data:", "#")), url
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo")
    out = base / "demo.html"
    assert main(["demo", "--run-dir", str(base / "run"), "--out", str(out), "--quiet", "--rows", "2000"]) == 0
    return base / "run", out


@pytest.mark.slow
def test_demo_report_has_every_section(demo_run):
    run_dir, out = demo_run
    html = out.read_text()
    for marker in ['id="summary"', "Verdict:", 'id="curves"', "gradient norm heatmap", "update / weight ratio",
                   "dead-unit fraction", 'id="explanations"', "Global importance", "Agreement between methods",
                   "beeswarm", "Single predictions", "Quality checks", "Trust:", "shipping_cost", 'id="run"']:
        assert marker in html, marker
    no_external_urls(html)
    assert len(html) < 2_000_000


@pytest.mark.slow
def test_explain_command_on_the_demo_run(demo_run, tmp_path, capsys):
    run_dir, _ = demo_run
    page = tmp_path / "row.html"
    assert main(["explain", str(run_dir), "--index", "4", "-o", str(page)]) == 0
    out = capsys.readouterr().out
    assert "row 4: predicted" in out and "shipping_cost" in out and "probabilities" in out
    assert "row 4: predicted 0" not in out and "row 4: predicted 1" not in out  # the class's name
    assert "completed" in out.split("row 4: predicted", 1)[1].split(",")[0] or "abandoned" in out
    html = page.read_text()
    assert "Predicted" in html and "shipping_cost" in html
    no_external_urls(html)
    assert main(["explain", str(run_dir), "--index", "99999"]) == 2
    assert "index" in capsys.readouterr().err


def watched(run_dir, model, steps=12, optimizer=None, every=2, **kwargs):
    """A short watched run of ``model`` on random 4-feature data (SGD at 0.1 unless given)."""
    opt = optimizer if optimizer is not None else torch.optim.SGD(model.parameters(), lr=0.1)
    with dg.watch(model, opt, run_dir, every=every, **kwargs) as run:
        for _ in range(steps):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(torch.randn(16, 4)), torch.randint(0, 2, (16,)))
            loss.backward()
            opt.step()
            run.log(loss=loss)
    return run_dir


def test_a_finding_says_how_many_sampled_steps_support_it(tmp_path):
    model = dg.mlp(4, [8], 2)
    with torch.no_grad():
        model.fc1.bias.fill_(-50.0)  # every hidden unit dead
    html = dg.report(watched(tmp_path / "run", model, steps=20), out=tmp_path / "r.html").read_text()
    assert "Verdict: <span class=\"verdict failing\">failing" in html
    assert "Supported by 8 of 8 sampled steps." in html  # 10 sampled steps, the first 2 a warm-up


def test_a_run_without_model_or_validation_says_what_is_missing(tmp_path):
    out = dg.report(watched(tmp_path / "run", dg.mlp(4, [8], 2)), out=tmp_path / "r.html")
    html = out.read_text()
    assert "No model and data were given" in html and "No validation loss was logged" in html
    assert 'id="explanations"' not in html


def test_a_killed_run_is_reported_as_incomplete(tmp_path):
    model = dg.mlp(4, [8], 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = dg.watch(model, opt, tmp_path / "run", every=1)
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(4, 4)).sum().backward()
        opt.step()
    run.flush()
    run.writer.flush()
    html = dg.report(tmp_path / "run", out=tmp_path / "r.html").read_text()
    assert "incomplete" in html and f"still being written by process {os.getpid()}" in html
    run.close(complete=False)  # closed without completing, and no live writer any more
    html = dg.report(tmp_path / "run", out=tmp_path / "r.html").read_text()
    assert "incomplete: the training stopped before the end" in html


class Named(nn.Module):
    """Layer names with HTML/JS in them (add_module accepts any string without a dot)."""

    def __init__(self):
        super().__init__()
        self.add_module("<script>alert(1)</script>", nn.Linear(4, 8))
        self.add_module("act<img src=x onerror=alert(2)>", nn.ReLU())
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        for module in self.children():
            x = module(x)
        return x


def test_user_strings_are_escaped(tmp_path):
    model = Named()
    run_dir = watched(tmp_path / "run", model, save_model=True, sample=(torch.randn(30, 4), torch.randint(0, 2, (30,))),
                      feature_names=["<b>f0</b>", "f1\"onmouseover=alert(3)", "f2", "f3"],
                      class_names=["<i>no</i>", "yes&<script>"])
    html = dg.report(run_dir, model=model, out=tmp_path / "r.html").read_text()
    for raw in ("<script>alert(1)</script>", "<img src=x", "<b>f0</b>", "<i>no</i>", "yes&<script>", '"onmouseover'):
        assert raw not in html, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;b&gt;f0&lt;/b&gt;" in html
    assert "<script" not in html.lower()  # the report itself needs no script at all


def test_the_report_command_and_its_errors(tmp_path, capsys):
    run_dir = watched(tmp_path / "run", dg.mlp(4, [8], 2))
    assert main(["report", str(run_dir), "-o", str(tmp_path / "x.html")]) == 0
    assert (tmp_path / "x.html").is_file()
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diagnose: run_dir") and "Traceback" not in err
    assert main(["explain", str(run_dir), "--index", "0"]) == 2
    assert "save_model=True" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_report_renders_in_headless_chromium(demo_run):
    from playwright.sync_api import sync_playwright
    _, out = demo_run
    artifacts = Path(__file__).resolve().parents[2] / "reports"
    artifacts.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors, requests = [], []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(Path(out).resolve().as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
            page.screenshot(path=str(artifacts / "test-report-screenshot.png"))
            layouts = {}
            for width in (390, 1400):  # a phone and a desktop
                page.set_viewport_size({"width": width, "height": 900})
                page.wait_for_timeout(100)
                layouts[width] = page.evaluate("""() => ({
                    page: document.documentElement.scrollWidth,
                    boxes: Array.from(document.querySelectorAll('main table, main .fig, main .case, main p'))
                        .filter(e => e.getBoundingClientRect().right
                                     > e.parentElement.getBoundingClientRect().right + 1)
                        .map(e => e.tagName + '.' + e.className),
                    images: Array.from(document.images).map(i => [i.naturalWidth, i.getBoundingClientRect().width]),
                    svgText: Math.min(...Array.from(document.querySelectorAll('svg.chart text'))
                        .map(t => parseFloat(getComputedStyle(t).fontSize)
                             * t.ownerSVGElement.getBoundingClientRect().width
                             / t.ownerSVGElement.viewBox.baseVal.width)),
                })""")
        finally:
            browser.close()
    assert errors == []
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert len(images) >= 8 and all(w > 0 for w in images)  # every embedded image decoded
    for width, layout in layouts.items():
        assert layout["page"] <= width, (width, layout["page"])  # no horizontal scrolling of the page
        assert layout["boxes"] == [], (width, layout["boxes"])  # nothing sticks out of its box
    # every plot's smallest text, as displayed at 1400 px: at least 9 px
    import base64
    import io

    from PIL import Image
    sources = re.findall(r'<img src="data:image/png;base64,([^"]+)"', Path(out).read_text())
    assert len(sources) == len(layouts[1400]["images"])
    for source, (natural, shown) in zip(sources, layouts[1400]["images"], strict=True):
        smallest = float(Image.open(io.BytesIO(base64.b64decode(source))).info["min-font-px"])
        assert smallest * shown / natural >= 9.0, (smallest, natural, shown)
    assert layouts[1400]["svgText"] >= 9.0 and layouts[390]["svgText"] >= 9.0  # SVG charts keep their text size


def test_a_consistency_section_when_given(tmp_path):
    x = torch.randn(60, 4, generator=torch.Generator().manual_seed(0))
    models = {}
    for name, sign in (("seed <0>", 1.0), ("seed 1", 1.0), ("flipped", -1.0)):
        m = nn.Linear(4, 1)
        with torch.no_grad():
            m.weight.copy_(sign * torch.tensor([[3.0, -2.0, 1.0, 0.1]]))
        models[name] = m
    result = dg.explanation_consistency(models, x, feature_names=["a", "b", "c", "<feat>"])
    run_dir = watched(tmp_path / "run", dg.mlp(4, [8], 2))
    html = dg.report(run_dir, out=tmp_path / "r.html", consistency=result).read_text()
    assert 'id="consistency"' in html and "Not consistent" in html and "direction of the effects" in html
    assert "seed &lt;0&gt;" in html and "<feat>" not in html and "&lt;feat&gt;" in html
    assert html.count("<td>1</td>") >= 3  # the rank agreement's diagonal and the same ranking


def test_a_run_killed_mid_training_is_not_called_healthy(tmp_path, capsys):
    """A process killed (os._exit) after flushing 30 steps: the header counts the recorded steps,
    the duration is a lower bound, the verdict is not 'healthy', and `diagnose findings` agrees."""
    import subprocess
    import sys
    import textwrap
    script = textwrap.dedent(f"""
        import os, torch, diagnose as dg
        model = dg.mlp(4, [8], 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        run = dg.watch(model, opt, {str(tmp_path / 'run')!r}, every=1)
        for _ in range(30):
            opt.zero_grad()
            loss = model(torch.randn(4, 4)).sum()
            loss.backward()
            opt.step()
            run.log(loss=loss)
        run.flush()
        run.writer.flush()  # what a periodic flush would have written before the kill
        os._exit(9)
    """)
    subprocess.run([sys.executable, "-c", script], check=False, timeout=120)
    html = dg.report(tmp_path / "run", out=tmp_path / "r.html").read_text()
    assert "30 steps recorded (to the last flush)" in html and "None steps" not in html
    assert 'class="verdict healthy"' not in html and "at least" in html
    assert main(["findings", str(tmp_path / "run")]) == 0
    assert "30 steps recorded" in capsys.readouterr().out


@pytest.mark.slow
def test_the_headline_shows_the_restored_best_epoch(tmp_path):
    data = dg.datasets.cart_abandonment(n=1500, seed=0)
    torch.manual_seed(0)
    model = dg.mlp(data.n_features, [32], 2)
    trainer = dg.Trainer(model, "adam", lr=0.05, seed=0, progress=False, run_dir=str(tmp_path / "run"),
                         early_stopping=dg.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True))
    history = trainer.fit(data.train, data.val, epochs=30, batch_size=32)
    best = trainer.early_stopping.best_epoch
    assert best < history["epoch"].max()  # it stopped after the best epoch, and restored it
    kept = trainer.evaluate(data.val)
    html = dg.report(tmp_path / "run", out=tmp_path / "r.html").read_text()
    assert f"epoch {best}: the best epoch, whose weights early stopping restored" in html
    headline = html.split("Metrics of", 1)[1].split("</table>", 1)[0]
    assert f"<td>{kept['loss']:.4g}</td>" in headline  # what the kept model scores, not the last epoch


def test_a_method_that_does_not_add_up_is_not_shown_as_an_equal():
    """gradient_shap adds up only in expectation: beside integrated gradients it is listed second,
    labelled incomplete, and the quality table states its gap relative to the output."""
    from diagnose.report import build
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 2)).eval()
    x = torch.randn(80, 5)
    out = build.explanations(model, x, None, None, None, ["gradient_shap", "integrated_gradients"])
    assert out["methods"] == ["integrated_gradients", "gradient_shap"]
    assert [i["method"] for i in out["incomplete"]] == ["gradient_shap"]
    assert out["labels"]["gradient_shap"] == "gradient_shap (incomplete)"
    gap = next(q["gap"] for q in out["quality"] if q["method"] == "gradient_shap")
    assert "% of the output difference" in gap


def test_the_tuning_plot_draws_pruned_trials_where_they_were_pruned():
    import pandas as pd

    from diagnose.report import svg
    nan = float("nan")
    trials = pd.DataFrame({"number": [0, 1, 2, 3, 4], "value": [1.0, 2.0, nan, nan, 0.5],
                           "state": ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED", "COMPLETE"],
                           "last_reported": [0.9, 1.8, 5.0, nan, 0.4]})
    chart = svg.trial_history(trials, "minimize")
    pruned = re.findall(r"<title>pruned \(its last reported value\): trial ([^,]+), ([^<]+)</title>", chart)
    assert pruned == [("2", "5")]  # at the value it was pruned on, not at the completed trials' median
    ticks = re.findall(r'text-anchor="middle">([^<]+)</text>', chart)
    assert all(t.lstrip("-").isdigit() for t in ticks if t not in ("trial", "trial history"))  # integer trials


def test_line_charts_are_inline_svg_with_values_on_hover():
    from diagnose.report import svg
    chart = svg.render(svg.Chart([svg.Series("<b>run</b>", [0, 1, 2], [1e-3, 1e-2, 1e-1])], title="t & u",
                                 xlabel="step", log_y=True, band=(1e-4, 1e-2), band_label="healthy"))
    assert chart.startswith("<svg") and "<script" not in chart and "<b>" not in chart
    assert "&lt;b&gt;run&lt;/b&gt;: step 1, 0.01</title>" in chart and "t &amp; u" in chart
    assert ">0.001<" in chart and ">0.1<" in chart  # decade ticks on the log axis
    assert svg.render(svg.Chart([svg.Series("empty", [], [])])) == ""


def test_single_predictions_show_raw_feature_values(tmp_path):
    """The Trainer saves the standardisation with the sample; reports show each value in the
    data's own units (x * scale + mean), the standardised one beside it."""
    data = dg.datasets.cart_abandonment(n=600, seed=0)
    torch.manual_seed(0)
    model = dg.mlp(data.n_features, [16], 2)
    dg.Trainer(model, "adam", seed=0, progress=False, run_dir=str(tmp_path / "run"), save_model=True,
               feature_names=data.feature_names, class_names=data.class_names,
               feature_scaler=data.scaler).fit(data.train, data.val, epochs=1, batch_size=64)
    from diagnose.report import prediction_page
    page, local = prediction_page(tmp_path / "run", 3, out=tmp_path / "p.html")
    html = page.read_text()
    top = local.contributions.iloc[0]
    j = data.feature_names.index(top["feature"])
    raw = float(top["value"]) * data.scaler.scale_[j] + data.scaler.mean_[j]
    assert f"<td>{raw:.4g} ({float(top['value']):.4g})</td>" in html and "value (standardised)" in html
    report = dg.report(tmp_path / "run", out=tmp_path / "r.html").read_text()
    assert "value (standardised)" in report
    with pytest.raises(TypeError, match="feature_scaler: expected a fitted sklearn StandardScaler"):
        dg.watch(dg.mlp(4, [4], 2), None, tmp_path / "other", feature_scaler="zscore")


def test_heatmaps_in_forward_order_with_honest_colour_ranges(tmp_path):
    import re

    import pandas as pd

    from diagnose.report import build, plots
    zeros = pd.DataFrame(0.0, index=range(10), columns=["fc1", "act1"])
    fig = plots.heatmap(zeros, "dead-unit fraction", False, fraction=True)
    image = fig.axes[0].images[0]
    assert (image.norm.vmin, image.norm.vmax) == (0.0, 1.0)  # not a -0.1..0.1 band around 0
    assert fig.axes[0].get_title() == ""  # the page's heading is the title
    constant = plots.heatmap(zeros + 2.0, "activation std", False).axes[0].images[0]
    assert constant.norm.vmin == 2.0 and constant.norm.vmax > 2.0
    model = dg.mlp(4, [8, 8], 2, batch_norm=True)
    run_dir = watched(tmp_path / "run", model, steps=12)
    html = dg.report(run_dir, out=tmp_path / "r.html").read_text()
    table = html.split("Latest values per layer", 1)[1].split("</table>", 1)[0]
    shown = re.findall(r"<tr><td><code>([^<]+)</code>", table)
    assert shown == dg.load_run(run_dir).meta["forward_order"]  # fc1, bn1, act1, fc2, ... not grouped by kind
    assert "Update / weight ratio per layer" in html and "gradient norm</span>" in table
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="chart"' in html and "<title>" in html
    from diagnose.findings import RunData
    run = dg.load_run(run_dir)
    assert build.training(run, RunData.from_run(run))["ratio_lines"] is not None


def test_octave_rows_merge_bins_per_power_of_two_with_zero_between_the_signs():
    from diagnose.monitor.statistics import histogram as H
    from diagnose.report import plots
    values = [np.array([0.0, 0.0, 1.0, 1.1, -3.0], np.float32), np.array([1.9, 1.0, 0.3, -2.5, -2.0], np.float32)]
    frame = H.frame([0, 10], np.stack([H.reference_counts(v) for v in values]))
    labels, table = plots.octave_rows(frame)
    # -[2, 4) | 0 | [0.25, 0.5) [0.5, 1) [1, 2): every octave between the smallest and largest used
    assert labels == ["-2e0", "0", "2e-1", "5e-1", "1e0"]
    np.testing.assert_allclose(table[:, 0], [0.2, 0.4, 0.0, 0.0, 0.4])
    np.testing.assert_allclose(table[:, 1], [0.4, 0.0, 0.2, 0.0, 0.4])


def test_pick_layers_puts_flagged_layers_first_then_spreads_evenly():
    from diagnose.report.build import pick_layers
    layers = [f"l{i}" for i in range(20)]
    assert pick_layers(layers, [], 6) == ["l0", "l4", "l8", "l11", "l15", "l19"]
    chosen = pick_layers(layers, ["l7", "missing", "l7"], 6)
    assert "l7" in chosen and len(chosen) == 6 and chosen == sorted(chosen, key=layers.index)
    assert pick_layers(layers[:3], [], 6) == layers[:3]


def test_distributions_section_shows_each_kind_over_time(tmp_path):
    model = dg.mlp(4, [8, 8, 8, 8], 2, activation="tanh")
    run_dir = watched(tmp_path / "run", model, steps=40, every=2, histogram_every=4)
    html = dg.report(run_dir, out=tmp_path / "r.html").read_text()
    section = html.split('<section id="distributions">', 1)[1].split("</section>", 1)[0]
    assert [t for t in ("activations", "gradients", "weights") if f"<h3>{t}</h3>" in section] == \
        ["activations", "gradients", "weights"]
    assert section.count("<img src=\"data:image/png") == 3
    assert "6 of 9 layers" in section and "5 of 5 layers" in section and "10 recorded steps" in section
    off = dg.report(watched(tmp_path / "off", dg.mlp(4, [8], 2), histograms=False), out=tmp_path / "o.html")
    assert 'id="distributions"' not in off.read_text()
