"""The ``diagnose`` command: thin wrappers over the library."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEMO_RUN = Path("runs/demo")


def _demo_setup(rows: int = 4000, seed: int = 0) -> tuple[Any, Any]:
    """The built-in example: the generated cart-abandonment data and its model (MLP 10-64-32-2
    with batch norm and dropout), seeded; shared by ``demo`` and ``preflight demo``."""
    import torch

    import diagnose as dg
    data = dg.datasets.cart_abandonment(n=rows, seed=seed)
    torch.manual_seed(seed)
    return data, dg.mlp(data.n_features, hidden=[64, 32], out_features=2, batch_norm=True, dropout=0.2)


def _load_config(path: str | Path) -> Any:
    """A YAML config file's content (a clear error for invalid YAML)."""
    import yaml
    try:
        return yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"config: {path} is not valid YAML ({err})") from err


def _config_dataset(config: dict[str, Any]) -> Any:
    """The bundled dataset a config names (``dataset:``, default digits)."""
    from diagnose.tune.config import DATASETS, dataset
    name = config.get("dataset", "digits")
    if name not in DATASETS:
        raise ValueError(f"config: dataset must be one of {list(DATASETS)}, got {name!r}")
    return dataset(name)


def _demo(args: argparse.Namespace) -> int:
    import diagnose as dg
    from diagnose.monitor.store import store_files, stored_meta

    data, model = _demo_setup(args.rows, args.seed)
    run_dir = Path(args.run_dir)
    overwrite = args.overwrite
    if store_files(run_dir) and not overwrite:
        # The demo replaces its own previous run in its own folder; any other run needs --overwrite.
        own = all((stored_meta(p) or {}).get("demo") for p in store_files(run_dir))
        if not (own and run_dir.resolve() == DEMO_RUN.resolve()):
            print(f"diagnose: {run_dir} already holds a run{'' if own else ' the demo did not write'}; pass "
                  "--overwrite or another --run-dir", file=sys.stderr)
            return 2
        overwrite = True
    # overwrite deletes only the run's own files, and refuses when the folder holds anything else
    trainer = dg.Trainer(
        model, optimizer="adadelta", loss="cross_entropy",
        early_stopping=dg.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True),
        run_dir=str(run_dir), overwrite=overwrite, run_meta={"demo": True}, seed=args.seed,
        progress=not args.quiet, save_model=True, diagnostics_every=5, histogram_every=25,
        feature_names=data.feature_names, class_names=data.class_names, feature_scaler=data.scaler)
    start = time.perf_counter()
    history = trainer.fit(data.train, data.val, epochs=args.epochs, batch_size=64)
    seconds = time.perf_counter() - start
    final = trainer.evaluate(data.val)
    run = dg.load_run(run_dir)
    stats = run.layer_stats()
    print("diagnose demo: cart abandonment (generated, 10 features, 5 informative)")
    print(f"  model      {sum(p.numel() for p in model.parameters()):,} parameters: "
          "MLP 10-64-32-2 with batch norm and dropout 0.2")
    print("  optimizer  adadelta (rho=0.9, eps=1e-6, lr=1.0); early stopping on val_loss, patience 5")
    best = trainer.early_stopping.best_epoch if trainer.early_stopping is not None else None
    stop = (f"stopped at epoch {trainer.stopped_epoch}, best epoch {best} restored"
            if trainer.stopped_epoch is not None else f"ran all {len(history)} epochs")
    print(f"  training   {len(history)} epochs, {trainer.step} steps in {seconds:.1f}s; {stop}")
    print(f"  validation loss {final['loss']:.4f}, accuracy {final['accuracy']:.3f}")
    print(history.tail(5).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"  recorded   {len(run.scalars())} logged steps and {len(stats)} layer rows "
          f"({stats['layer'].nunique()} layers) in {run_dir}/")
    from diagnose.report import report
    out = report(run_dir, out=args.out)
    print(f"  report     {out}  (open it in a browser; it works offline)")
    return 0


def _report(args: argparse.Namespace) -> int:
    from diagnose.report import report
    out = report(args.run_dir, out=args.output)
    print(f"report written to {out}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from diagnose.report import prediction_page
    out, local = prediction_page(args.run_dir, args.index, out=args.output, method=args.method)
    names = local.class_names

    def label(k: int) -> str:
        return str(names[k]) if names and 0 <= k < len(names) else str(k)
    classified = local.probabilities is not None
    print(f"row {args.index}: predicted {label(int(local.prediction)) if classified else f'{local.prediction:.4g}'}"
          + (f", probabilities {', '.join(f'{label(k)} {p:.3f}' for k, p in enumerate(local.probabilities))}"
             if classified else ""))
    print(f"explained: the {local.output_kind} of {label(local.target)} (the predicted class), {local.output:.4g} = "
          f"base {local.base_value:.4g} + contributions ({local.method}):")
    print(local.contributions.head(args.top).to_string(index=False, float_format=lambda v: f"{v:+.4g}"))
    print(f"page written to {out}")
    return 0


def _print_findings(found: Sequence[Any]) -> None:
    """Numbered findings, wrapped to the terminal: severity, kind, where, message, remedy."""
    import textwrap
    width = shutil.get_terminal_size((100, 20)).columns
    for i, f in enumerate(found, 1):
        where = f" in {f.layer}" if f.layer else ""
        steps = f", steps {f.steps[0]}-{f.steps[1]}" if f.steps else ""
        support = f" (supported by {f.support})" if f.support else ""
        print(f"\n{i}. [{f.severity.upper()}] {f.kind}{where}{steps}{support}")
        print(textwrap.fill(f.message, width, initial_indent="   ", subsequent_indent="   "))
        print(textwrap.fill("Remedy: " + f.remedy, width, initial_indent="   ", subsequent_indent="   "))


PREFLIGHT_EXAMPLE = """\
# diagnose preflight config: a dg.mlp on a bundled dataset
dataset: digits            # digits | breast_cancer | cart_abandonment
model: {hidden: [64], dropout: 0.0, batch_norm: false}
optimizer: adam            # any name of dg.list_optimizers()
lr: 0.001
loss: cross_entropy

# or a Python script that defines `model` and `data` (and optionally `loss`, `optimizer`,
# `val_data`), or `demo` for the built-in example
"""


def _preflight_inputs(target: str) -> dict[str, Any]:
    """The model, data, loss and optimizer that ``diagnose preflight`` checks."""
    import runpy

    import torch

    import diagnose as dg
    path = Path(target)
    if target == "demo":
        data, model = _demo_setup()
        return {"model": model, "data": data.train, "val_data": data.val, "optimizer": "adadelta"}
    if not path.is_file():
        raise ValueError(f"CONFIG_OR_SCRIPT: {target} is not a file (a .py script, a .yaml config, or 'demo')")
    if path.suffix == ".py":
        namespace = runpy.run_path(str(path), run_name="__preflight__")
        missing = [k for k in ("model", "data") if k not in namespace]
        if missing:
            raise ValueError(f"CONFIG_OR_SCRIPT: {target} must define {' and '.join(missing)} (a model and its "
                             "training data as an (X, y) pair, Dataset or DataLoader)")
        return {k: namespace[k] for k in ("model", "data", "loss", "optimizer", "val_data", "lr") if k in namespace}
    config = _load_config(path)
    if not isinstance(config, dict):
        raise ValueError(f"CONFIG_OR_SCRIPT: {target} must be a YAML mapping; for example:\n{PREFLIGHT_EXAMPLE}")
    data = _config_dataset(config)
    spec = {"hidden": [64], "dropout": 0.0, "batch_norm": False, **(config.get("model") or {})}
    hidden = [spec["hidden"]] if isinstance(spec["hidden"], int) else list(spec["hidden"])
    torch.manual_seed(int(config.get("seed", 0)))
    model = dg.mlp(data.n_features, hidden, data.n_classes, dropout=spec["dropout"],
                   batch_norm=bool(spec["batch_norm"]))
    return {"model": model, "data": data.train, "val_data": data.val, "optimizer": config.get("optimizer", "adam"),
            "lr": config.get("lr"), "loss": config.get("loss", "cross_entropy")}


def _preflight(args: argparse.Namespace) -> int:
    import diagnose as dg
    inputs = _preflight_inputs(args.target)
    result = dg.preflight(inputs.pop("model"), inputs.pop("data"), lr_range=not args.no_lr_range,
                          run_dir=args.run_dir, **inputs)
    serious = [f for f in result if f.severity != "info"]
    print(f"preflight of {args.target}: {len(serious)} problem{'s' if len(serious) != 1 else ''} found in "
          f"{result.seconds:.1f}s" + (f" (written to {args.run_dir})" if args.run_dir else ""))
    _print_findings(result)
    return 1 if any(f.severity == "critical" for f in result) else 0


def _compare(args: argparse.Namespace) -> int:
    from diagnose.report.compare import compare
    out = compare(args.run_dirs, out=args.output)
    print(f"comparison of {len(args.run_dirs)} runs written to {out}")
    return 0


def _findings(args: argparse.Namespace) -> int:
    from diagnose.findings import evaluate
    from diagnose.monitor.run import load_run

    run = load_run(args.run_dir)
    evaluation = evaluate(run)
    found = evaluation.findings
    meta = run.meta
    from diagnose.findings import RunData
    from diagnose.report.build import recorded_steps
    print(f"{args.run_dir}: {recorded_steps(meta, RunData.from_run(run))}, {run.state(meta)}")
    if not found:
        print("No training-health problems found.")
    _print_findings(found)
    if evaluation.skipped:
        print("\nNot evaluated:")
        for rule, why in evaluation.skipped:
            print(f"   {rule}: {why}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    import subprocess
    from datetime import datetime

    from diagnose.tune import config as tune_config
    from diagnose.tune import workers
    if args.workers < 1:
        raise ValueError(f"--workers: expected a positive number of worker processes, got {args.workers}")
    config = tune_config.load(args.config)
    study = args.study or tune_config.default_study(config)
    storage = args.storage or config.storage
    if args.workers > 1 and storage is None:  # local workers share a SQLite file
        storage = f"sqlite:///{Path('runs/tune') / (study + '.db')}"
    run_dir = None
    if not args.no_runs:  # one run directory per trial (a study's trial numbers are unique in its storage)
        run_dir = args.run_dir or config.run_dir or str(
            Path("runs/tune") / (study if storage else f"{study}-{datetime.now():%Y%m%d-%H%M%S}"))
    from diagnose.tune.study import NoTrialCompleted, result_of
    if args.workers == 1:
        try:
            result = tune_config.run(config, storage=storage, study=study if storage else None, trials=args.trials,
                                     run_dir=run_dir, heartbeat=args.heartbeat)
        except NoTrialCompleted as err:
            if args.child:
                return 0  # the parent says so, once
            print(f"diagnose: {err}\n{workers.describe(err.study)}", file=sys.stderr)
            return 1
        if args.child:
            return 0
    else:
        assert storage is not None
        cmd = [sys.executable, "-m", "diagnose.cli", "tune", str(args.config), "--workers", "1", "--storage", storage,
               "--study", study, "--heartbeat", str(args.heartbeat), "--child"]
        cmd += ["--trials", str(args.trials)] if args.trials else []
        cmd += ["--run-dir", run_dir] if run_dir else ["--no-runs"]
        print(f"diagnose: {args.workers} workers on study {study!r} in {storage}; follow it with\n"
              f"  diagnose tune-status {storage} {study}", flush=True)
        import tempfile
        logs = [tempfile.TemporaryFile(mode="w+") for _ in range(args.workers)]  # a pipe could fill and block
        procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log) for log in logs]
        failed = []
        for proc, log in zip(procs, logs):
            proc.wait()
            log.seek(0)
            if proc.returncode != 0:
                failed.append(f"worker {proc.pid} exited with {proc.returncode}: {log.read().strip()[-1500:]}")
            log.close()
        for message in failed:
            print(f"diagnose: {message}", file=sys.stderr)
        shared = workers.load_study(storage, study)
        try:
            result = result_of(shared, shared.direction.name.lower())
        except NoTrialCompleted as err:
            print(f"diagnose: {err}\n{workers.describe(shared)}", file=sys.stderr)
            return 1
        if failed and len(failed) == len(procs):
            return 1
    done = result.trials["state"].value_counts().to_dict()
    print(f"study: {len(result.trials)} trials in all ({', '.join(f'{v} {k.lower()}' for k, v in done.items())})")
    print(f"best {config.metric}: {result.best_value:.4g} with {result.best_params}")
    if result.importances:
        print("importances: " + ", ".join(f"{k} {v:.2f}" for k, v in result.importances.items()))
    if run_dir:
        try:
            from diagnose.report.compare import compare_trials
            page = compare_trials(result, 3, out=Path("reports") / f"{study}-best-trials.html")
            print(f"best trials' runs compared: {page}  (each trial's run: {run_dir}/trial-<number>)")
        except ValueError as err:
            print(f"no comparison page: {err}")
    return 0


def _tune_status(args: argparse.Namespace) -> int:
    from diagnose.tune import workers
    print(workers.describe(workers.load_study(args.storage, args.study)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and --help)."""
    parser = argparse.ArgumentParser(
        prog="diagnose",
        description="Tell whether a PyTorch network is training well and why it predicts what it predicts.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="train the built-in example (cart abandonment) and record its diagnostics",
                          description="Train an MLP with Adadelta, batch norm, dropout and early stopping on "
                                      "the generated cart-abandonment data, recording diagnostics into a run "
                                      "directory, and print a summary.")
    demo.add_argument("--run-dir", default=str(DEMO_RUN), help="where to record the run (default: %(default)s)")
    demo.add_argument("--epochs", type=int, default=60, help="maximum epochs (default: %(default)s)")
    demo.add_argument("--rows", type=int, default=4000, help="rows of generated data (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.add_argument("--overwrite", action="store_true",
                      help="replace a run already in --run-dir (only the run's own files; a folder holding "
                           "anything else is refused)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.add_argument("--out", default="reports/demo.html", help="where to write the report (default: %(default)s)")
    demo.set_defaults(func=_demo)
    rep = sub.add_parser("report", help="write the HTML report of a recorded run",
                         description="Write one self-contained HTML page on a recorded run: verdict and findings, "
                                     "training curves, per-layer heatmaps, and explanations when the run saved its "
                                     "model and a data sample (save_model=True).")
    rep.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holds run.sqlite)")
    rep.add_argument("-o", "--output", default=None, help="the HTML file (default: reports/<run name>.html)")
    rep.set_defaults(func=_report)
    exp = sub.add_parser("explain", help="explain one prediction of a run's saved model",
                         description="Explain row N of the data sample saved with a run, using its saved model: "
                                     "prints the prediction, probabilities and top contributions, and writes a "
                                     "single-prediction HTML page.")
    exp.add_argument("run_dir", metavar="RUN_DIR", help="a run directory recorded with save_model=True")
    exp.add_argument("--index", type=int, required=True, help="the row of the saved sample to explain")
    exp.add_argument("--method", default=None, help="attribution method (default: one that suits the model)")
    exp.add_argument("--top", type=int, default=10, help="contributions to print (default: %(default)s)")
    exp.add_argument("-o", "--output", default=None, help="the HTML file (default: reports/<run>-row<N>.html)")
    exp.set_defaults(func=_explain)
    findings = sub.add_parser("findings", help="diagnose a recorded run: what is wrong, the evidence, the remedy",
                              description="Read a run directory written by dg.watch or dg.Trainer and print its "
                                          "training-health findings (vanishing/exploding gradients, dead units, "
                                          "saturation, NaN/Inf, divergence, overfitting, stalled learning rates, "
                                          "plateaus), most severe first.")
    findings.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holds run.sqlite)")
    findings.set_defaults(func=_findings)
    from diagnose.tune.config import EXAMPLE as TUNE_EXAMPLE
    from diagnose.tune.workers import HEARTBEAT_SECONDS
    tune = sub.add_parser("tune", help="run a hyperparameter search, on one or many worker processes and machines",
                          formatter_class=argparse.RawDescriptionHelpFormatter,
                          description="Tune a dg.mlp on a bundled dataset from a YAML config. --workers N runs N "
                                      "local processes on one study (a SQLite file under runs/tune unless "
                                      "--storage says otherwise); workers on other machines join it with the same "
                                      "--storage URL (postgresql://user@host/db) and --study. The study runs the "
                                      "config's number of trials in all; a worker killed mid-trial has its trial "
                                      "run again by another. Each trial records its diagnostics in "
                                      "runs/tune/<study>/trial-<number>.\n\nExample config:\n\n" + TUNE_EXAMPLE)
    tune.add_argument("config", metavar="CONFIG", help="a YAML file (see the example above)")
    tune.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default: 1)")
    tune.add_argument("--storage", default=None, help="a storage URL shared by the workers: sqlite:///path.db (one "
                      "machine), postgresql://user@host/db (several), journal:///path/study.log")
    tune.add_argument("--study", default=None, help="the study name shared by the workers (default: the config's "
                      "'study', else the config file's name)")
    tune.add_argument("--trials", type=int, default=None, help="the study's number of trials (default: the config's)")
    tune.add_argument("--run-dir", default=None, help="where trials record their runs (default: runs/tune/<study>)")
    tune.add_argument("--no-runs", action="store_true", help="record no per-trial runs")
    tune.add_argument("--heartbeat", type=float, default=HEARTBEAT_SECONDS,
                      help="seconds between a running trial's heartbeats; silent for 3, it is run again "
                           "(default: %(default)s)")
    tune.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    tune.set_defaults(func=_tune)
    status = sub.add_parser("tune-status", help="the progress of a study (while its workers run)",
                            description="Print a study's trials by state, the trials still queued and running, "
                                        "and the best so far.")
    status.add_argument("storage", metavar="STORAGE", help="the study's storage URL")
    status.add_argument("study", metavar="STUDY", help="the study name")
    status.set_defaults(func=_tune_status)
    cmp = sub.add_parser("compare", help="write one HTML page comparing recorded runs",
                         description="Compare two or more run directories on one self-contained page: curves "
                                     "overlaid, final and best metrics, the configuration that differs, each run's "
                                     "findings, and the statistics of the layers they share.")
    cmp.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="two or more run directories")
    cmp.add_argument("-o", "--output", default=None, help="the HTML file (default: reports/compare.html)")
    cmp.set_defaults(func=_compare)
    pre = sub.add_parser("preflight", help="check a model and its data before training (seconds)",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Run the checks an expert runs before a long training: loss at "
                                     "initialisation, input and batch dependence, gradients at step 0, overfitting "
                                     "one batch, the data, and a learning-rate range test. Exit status 1 when a "
                                     "critical problem is found.\n\nExample config:\n\n" + PREFLIGHT_EXAMPLE)
    pre.add_argument("target", metavar="CONFIG_OR_SCRIPT",
                     help="a .py script defining model and data, a .yaml config (see above), or 'demo'")
    pre.add_argument("--run-dir", default=None, help="save the result there; the run's report shows it first")
    pre.add_argument("--no-lr-range", action="store_true", help="skip the learning-rate range test")
    pre.set_defaults(func=_preflight)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``diagnose`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except (ValueError, TypeError, OSError) as err:
        print(f"diagnose: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
