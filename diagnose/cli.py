"""The ``diagnose`` command: thin wrappers over the library."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

DEMO_RUN = Path("runs/demo")


def _demo(args: argparse.Namespace) -> int:
    import torch

    import diagnose as dg

    data = dg.datasets.cart_abandonment(n=args.rows, seed=args.seed)
    torch.manual_seed(args.seed)
    model = dg.mlp(data.n_features, hidden=[64, 32], out_features=2, batch_norm=True, dropout=0.2)
    run_dir = Path(args.run_dir)
    if (run_dir / "run.sqlite").exists():
        if run_dir.resolve() != DEMO_RUN.resolve() and not args.overwrite:
            print(f"diagnose: {run_dir} already holds a run; pass --overwrite or another --run-dir",
                  file=sys.stderr)
            return 2
        shutil.rmtree(run_dir)  # the demo's own run directory is rewritten on every demo
    trainer = dg.Trainer(
        model, optimizer="adadelta", loss="cross_entropy",
        early_stopping=dg.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True),
        run_dir=str(run_dir), seed=args.seed, progress=not args.quiet, save_model=True, diagnostics_every=5,
        feature_names=data.feature_names, class_names=data.class_names)
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
    stop = (f"stopped at epoch {trainer.stopped_epoch}, best epoch {trainer.early_stopping.best_epoch} restored"
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
    print(f"row {args.index}: predicted {local.prediction}"
          + (f", probabilities {', '.join(f'{p:.3f}' for p in local.probabilities)}"
             if local.probabilities is not None else ""))
    print(f"explained {local.output_kind} {local.output:.4g} = base {local.base_value:.4g} + contributions "
          f"({local.method}):")
    print(local.contributions.head(args.top).to_string(index=False, float_format=lambda v: f"{v:+.4g}"))
    print(f"page written to {out}")
    return 0


def _findings(args: argparse.Namespace) -> int:
    import textwrap

    from diagnose.findings import SEVERITY_ORDER, evaluate
    from diagnose.monitor.store import load_run

    run = load_run(args.run_dir)
    outcomes = evaluate(run)
    found = sorted((f for o in outcomes for f in o.findings),
                   key=lambda f: (SEVERITY_ORDER[f.severity], f.steps[0] if f.steps else 0))
    meta = run.meta
    state = "complete" if meta.get("complete") else "incomplete (killed or still running)"
    print(f"{args.run_dir}: {meta.get('steps', '?')} steps, {state}")
    if not found:
        print("No training-health problems found.")
    width = shutil.get_terminal_size((100, 20)).columns
    for i, f in enumerate(found, 1):
        where = f" in {f.layer}" if f.layer else ""
        steps = f", steps {f.steps[0]}-{f.steps[1]}" if f.steps else ""
        print(f"\n{i}. [{f.severity.upper()}] {f.kind}{where}{steps}")
        print(textwrap.fill(f.message, width, initial_indent="   ", subsequent_indent="   "))
        print(textwrap.fill("Remedy: " + f.remedy, width, initial_indent="   ", subsequent_indent="   "))
    skipped = [o for o in outcomes if o.skipped]
    if skipped:
        print("\nNot evaluated:")
        for o in skipped:
            print(f"   {o.name}: {o.skipped}")
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
    demo.add_argument("--overwrite", action="store_true", help="replace a run already in --run-dir")
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
