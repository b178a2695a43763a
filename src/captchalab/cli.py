"""The ``captchalab`` command: parses, calls the Python API, prints. Nothing else."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from captchalab import _tf  # first: sets TensorFlow's log level before anything can load it
from captchalab.config import settings_defaults
from captchalab.errors import CaptchaLabError, extras_named
from captchalab.inference.http_config import API_KEY_ENV, ServeConfig


class _FlagsAsFlags:
    """Flags take no value: help shows ``--json``, not ``--json <bool>`` (Typer prints every option's type)."""

    params: list[click.Parameter]

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        for param in [*self.params, option]:
            if getattr(param, "is_flag", False):  # Typer's options are not click.Option subclasses
                param.metavar = ""  # type: ignore[union-attr]
        return option


class _Command(_FlagsAsFlags, typer.core.TyperCommand):
    pass


class _Group(_FlagsAsFlags, typer.core.TyperGroup):
    pass


app = typer.Typer(
    help="Train, evaluate, diagnose and serve solvers for text image CAPTCHAs.\n\n"
         "The base install solves and generates; `train`, `evaluate --report`, `export`, `audit`, `diagnose`, "
         "`adapt` and `label` need `pip install 'captchalab[train]'`, `serve` needs `captchalab[serve]` "
         "(both: `[all]`).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",  # reflows the docstrings paragraphs to the terminal width
    cls=_Group,
)
out = Console()
err = Console(stderr=True)


def command(name: str | None = None, **kwargs: Any) -> Any:
    """``app.command`` with flags shown as flags."""
    return app.command(name, cls=_Command, **kwargs)


SkipBad = Annotated[bool, typer.Option("--skip-bad", help="Continue without unreadable or mislabelled entries.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def _version(value: bool) -> None:
    if value:
        from captchalab import __version__

        print(f"captchalab {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    pass


@command()
def generate(
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="New folder for images + labels.csv.")],
    count: Annotated[int, typer.Option("--count", "-n", help="Number of images.")] = 1000,
    length: Annotated[str | None, typer.Option(
        help="Characters per image: 5 (default) or a range with both ends: 4-6.")] = None,
    charset: Annotated[str | None, typer.Option(help="Symbols, ranges allowed (default 0-9A-Z).")] = None,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT (default 160x60).")] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same images.")] = 0,
    like: Annotated[Path | None, typer.Option(help="Look like this labelled set: its size, lengths, charset, "
                                                   "colours and font size (the options above override).")] = None,
    world: Annotated[bool, typer.Option("--world", help="A new style per image from broad priors (docs/world.md): "
                                                        "sizes vary; --length default 1-10, --charset 0-9a-zA-Z.")]
    = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Start over, discarding an interrupted run's images "
                                                        "(by default a rerun continues it).")] = False,
    workers: Annotated[int, typer.Option(min=0, help="Processes rendering images (0: one per core); the "
                                                     "images are the same for any number.")] = 0,
    engine: Annotated[str, typer.Option(help="local (processes on this machine) or ray (Ray tasks, on a local "
                                             "Ray or the cluster at --address; needs the [ray] extra); the same "
                                             "images either way.")] = "local",
    address: Annotated[str | None, typer.Option(help="With --engine ray: the cluster ('ray start --head' "
                                                     "prints it); default a local Ray.")] = None,
) -> None:
    """Render synthetic captchas as a dataset folder: the PyPI 'captcha' generator, a look-alike of a set
    (--like) or the wide synthetic world (--world)."""
    from captchalab.data.synthetic import Workers
    from captchalab.data.synthetic import generate as run
    from captchalab.errors import UsageError
    from captchalab.progress import counting

    if world and (like is not None or size is not None):
        raise UsageError("--world draws its own image sizes and looks; drop --size and --like")
    if engine not in ("local", "ray"):
        raise UsageError(f"--engine '{engine}' is not one of local, ray")
    if address is not None and engine != "ray":
        raise UsageError("--address is the Ray cluster of --engine ray; add --engine ray or drop --address")
    if workers and engine == "ray":
        raise UsageError("--workers counts local processes; with --engine ray, Ray uses the cluster's CPUs: drop it")
    renderers = Workers(workers, ray=engine == "ray", address=address)
    with counting(f"generating {out_dir}", quiet, total=count) as advance:
        if world:
            from captchalab.data.world import generate_world

            folder = generate_world(out_dir, count, seed, charset or "0-9a-zA-Z", length or "1-10", advance, force,
                                    renderers)
        elif like is not None:
            from captchalab.data.style import generate_like

            folder = generate_like(out_dir, like, count, seed, length, charset, size, advance, force, renderers)
        else:
            folder = run(out_dir, count, length or "5", charset or "0-9A-Z", size or "160x60", seed, advance, force,
                         renderers)
    err.print(f"wrote {count} images and labels.csv to {folder}" + (" (style: style.json)" if like else ""))


SETTINGS_HELP = ("**--set keys and their defaults:** " + ", ".join(f"`{k}={v}`" for k, v in settings_defaults())
                 + " (`train.epochs=0`: scaled to the data). `model.OPTION=VALUE` sets an option of the model; "
                   "`captchalab models` lists each model's options with their defaults. `image.height=H`, "
                   "`image.width=W` set the input size (default: from the data or the start), `image.channels=3` "
                   "reads colour instead of grey.")


@command(epilog=SETTINGS_HELP)
def train(
    data: Annotated[Path | None, typer.Argument(help="Dataset folder, or a file,label CSV (not with --resume).")]
    = None,
    val: Annotated[Path | None, typer.Option(help="Validation set (default: 10% held out).")] = None,
    model: Annotated[str | None, typer.Option(help="mlp, cnn, crnn (default) or segment.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run folder (default runs/MODEL-TIME).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epoch budget; the learning rate follows a cosine over it and "
                                                    "early stopping may end sooner (default: scaled to the data, "
                                                    "at least train.min_steps steps and 20 epochs, 100 for the "
                                                    "slow-learning mlp).")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a setting, e.g. train.learning_rate=0.001 or model.rnn_units=96; repeatable.",
    )] = None,
    charset: Annotated[str | None, typer.Option(help="Charset, e.g. '0-9A-Z' (default: from labels).")] = None,
    case_insensitive: Annotated[bool, typer.Option("--case-insensitive", help="Fold case.")] = False,
    skip_bad: SkipBad = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing run folder.")] = False,
    resume: Annotated[Path | None, typer.Option(help="Continue the killed or stopped run RUN (with --epochs: its new "
                                                     "limit; at or below the epochs done, finish it now).")] = None,
    init: Annotated[str, typer.Option(help="Start from a pretrained run (fine-tuning; a new charset gets new "
                                           "output classes): a run folder, 'general' for the general reader "
                                           "shipped with captchalab (docs/world.md), 'none' for random weights, "
                                           "or 'auto': the general reader unless --model names another network, "
                                           "--set model.*/image.* (but image.channels) changes it or labels are "
                                           "longer than 10.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    devices: Annotated[int | None, typer.Option(min=1, max=64, help="Train on N devices (train.devices): "
                                                "MirroredStrategy over N GPUs, else N logical CPUs; the batch "
                                                "size is per device (docs/scale.md).")] = None,
) -> None:
    """Train a model (a crnn fine-tunes the shipped general reader unless --init says otherwise); writes a run
    folder with model.keras, model.onnx, config, history, metrics, curves.png."""
    from captchalab.errors import UsageError
    from captchalab.training import train as run

    if data is None and resume is None:
        raise UsageError("train needs DATA (a dataset folder or labels CSV), or --resume RUN")
    overrides = [*(set_ or []), *([f"train.devices={devices}"] if devices else [])]
    folder = run(data or resume, val=val, model=model, out=out_dir, epochs=epochs, overrides=overrides,
                 charset=charset, case_insensitive=case_insensitive, skip_bad=skip_bad, force=force, resume=resume,
                 quiet=quiet, init=init)
    summary = json.loads((folder / "metrics.json").read_text())
    _report_skipped(summary.get("skipped", []), data or resume)
    if summary.get("stopped_by"):
        err.print(f"stopped after epoch {summary['epochs_run']} of {summary.get('epochs_budget', '?')}: "
                  f"{summary['stopped_by']} reached (continue with --resume {folder} --epochs N)", highlight=False)
    err.print(f"run folder: {folder}  validation sequence accuracy {summary['sequence_accuracy']:.3f}"
              f"{_started_from(summary.get('init'))}", highlight=False)
    for finding in summary.get("diagnosis", []):
        err.print(f"[yellow]likely cause:[/] {escape(finding['cause'])} ({escape(finding['evidence'])}); "
                  f"{escape(finding['advice'])}")
    for note in summary.get("notes", []):
        err.print(f"[yellow]note:[/] {escape(note['note'])}; {escape(note['advice'])}")


def _started_from(init: str | None) -> str:
    """How train's summary line names the run's start (--init, as train resolved it)."""
    from captchalab import runs

    name = runs.start_name(init)
    if name is None:
        return ""
    return "  (fine-tuned from the general reader; --init none trains from random weights)" if name == runs.GENERAL \
        else f"  (fine-tuned from {init})"


@command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder or .onnx file.")],
    data: Annotated[Path, typer.Argument(help="Labelled dataset folder or CSV.")],
    as_json: JsonFlag = False,
    skip_bad: SkipBad = False,
    report: Annotated[Path | None, typer.Option(help="Also write an HTML report (DIR/index.html).")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="Also write the result as JSON to this file.")]
    = None,
) -> None:
    """Sequence/char accuracy, CER, per-position accuracy, confidence and speed.

    For a run folder the result is also kept as RUN/evaluations/NAME.json, NAME being the dataset's
    (train's RUN/metrics.json is never changed); for an .onnx file or the bundled model, only printed
    (and written to --out)."""
    from captchalab.evaluation import evaluate as run_evaluation

    if report is not None:  # before the work, not after it: the report draws with matplotlib ([train] extra)
        import matplotlib  # noqa: F401
    result = run_evaluation(run, data, skip_bad=skip_bad, quiet=as_json, report=report, out=out_file)
    _report_skipped(result.get("skipped", []), data)
    if as_json:
        print(json.dumps(result))
        return
    table = Table("metric", "value", title=f"{result['model']} on {data}")
    for key in ("n", "sequence_accuracy", "char_accuracy", "cer", "mean_confidence", "ms_per_image"):
        value = result[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    table.add_row("per_position_accuracy", " ".join(f"{v:.3f}" for v in result["per_position_accuracy"]))
    out.print(table)
    if "saved" in result:
        err.print(f"saved: {result['saved']}")
    if report is not None:
        err.print(f"report: {result['report']}")


@command()
def solve(
    images: Annotated[list[Path], typer.Argument(help="Images and/or folders of images.")],
    model: Annotated[str | None, typer.Option(help="Run folder, .onnx, or 'general' for the general reader "
                                                   "(default: bundled model).")] = None,
    as_json: JsonFlag = False,
    top_k: Annotated[int, typer.Option("--top-k", min=1, max=20, help="Best K readings per image.")] = 1,
    results_csv: Annotated[Path | None, typer.Option(
        "--out", help="Also write a file,text,confidence,error CSV.")] = None,
    threads: Annotated[int, typer.Option(help="Inference threads (0: all cores).")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, max=1024, help="Images per model call.")] = 64,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Exit 0 even if some images cannot be read.")] = False,
    length: Annotated[str | None, typer.Option(
        help="Answer length: 5, a range such as 4-6, 4- (4 or more) or -6 (at most 6). Default: the lengths of "
             "the run's training labels; 1- for any.")] = None,
    allowed: Annotated[str | None, typer.Option(help="Characters the answer may use, ranges allowed: a-z0-9.")] = None,
    case: Annotated[str, typer.Option(help="any (as read), lower or upper (the site ignores case).")] = "any",
    min_confidence: Annotated[float | None, typer.Option(
        "--min-confidence", min=0.0, max=1.0, help="Abstain below this calibrated confidence.")] = None,
    engine: Annotated[str, typer.Option(help="local (this process) or ray (Ray Data actors; needs the [ray] extra "
                                             "and --out FILE.parquet|csv; see docs/scale.md).")] = "local",
    address: Annotated[str | None, typer.Option(help="--engine ray: the cluster to join (default: a local one).")]
    = None,
    actors: Annotated[int | None, typer.Option(min=1, help="--engine ray: actors, each loads the model once "
                                                           "(default: the cluster's CPUs / --threads).")] = None,
    gpus: Annotated[float, typer.Option(min=0.0, help="--engine ray: GPUs per actor (ONNX Runtime's CUDA "
                                                      "provider; CPU with a warning where it is missing).")] = 0.0,
) -> None:
    """Read captchas. --json prints one {"file", "text", "confidence"} object per line, with "ood": true or
    false where the model records what its training images look like (false: like them).

    An unreadable image gets an error line (JSON: {"file", "error"}) and the others are still
    read; the exit code is then 3 unless --skip-bad is given. --length, --allowed and --case
    restrict the decoding; below --min-confidence a reading is abstained (JSON: "text": null,
    "abstained": true, "guess"), so the caller can fetch a new captcha instead."""
    from captchalab.decoding import Constraints
    from captchalab.errors import DataError, UsageError
    from captchalab.inference.bulk import solve_files

    constraints = Constraints.parse(length, allowed, case)
    if engine == "ray":
        failures = _solve_on_ray(images, model, top_k, results_csv, threads, batch_size, constraints, min_confidence,
                                 address, actors, gpus)
    elif engine == "local":
        failures = solve_files(images, model, as_json, top_k, results_csv, threads, batch_size, constraints,
                               min_confidence)
    else:
        raise UsageError(f"--engine '{engine}' is not one of local, ray")
    where = f"the error column of {results_csv}" if engine == "ray" else "the ERROR lines above"
    if failures and not skip_bad:
        raise DataError(f"{failures} image(s) could not be read (see {where}); fix or remove them, "
                        "or pass --skip-bad to exit 0")
    if failures:
        err.print(f"skipped {failures} unreadable image(s) (see {where})")


def _solve_on_ray(images: list[Path], model: str | None, top_k: int, out_file: Path | None, threads: int,
                  batch_size: int, constraints: Any, min_confidence: float | None, address: str | None,
                  actors: int | None, gpus: float) -> int:
    """solve --engine ray: the readings to --out (a table, not lines on stdout); returns the failures."""
    from captchalab.errors import UsageError
    from captchalab.inference.ray_solve import solve_dataset, write_results

    if out_file is None:
        raise UsageError("--engine ray writes its readings to a file: add --out results.parquet (or .csv)")
    source = images[0] if len(images) == 1 else images
    dataset = solve_dataset(source, model, address=address, actors=actors, threads=threads or 1, num_gpus=gpus,
                            batch_size=batch_size, top_k=top_k, constraints=constraints,
                            min_confidence=min_confidence)
    rows, failures = write_results(dataset, out_file)
    err.print(f"wrote {rows} readings to {out_file}" + (f" ({failures} with an error)" if failures else ""),
              highlight=False)
    return failures


@command()
def serve(
    model: Annotated[list[str] | None, typer.Option(
        help="RUN (the default model) or NAME=RUN; repeat to serve several; RUN 'general' is the general reader "
        "(default: bundled model).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on; loopback only by default.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
    max_loaded: Annotated[int, typer.Option(min=1, help="Models kept in memory per process (LRU).")] = 4,
    threads: Annotated[int, typer.Option(min=0, help="Inference threads per model (0: all cores).")] = 1,
    max_bytes: Annotated[int, typer.Option(min=1, help="Upload limit per image, bytes.")] = ServeConfig.max_bytes,
    max_pixels: Annotated[int, typer.Option(min=1, help="Pixel limit per image (width x height).")]
    = ServeConfig.max_pixels,
    max_images: Annotated[int, typer.Option(min=1, help="Images per request.")] = ServeConfig.max_images,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to receive, and to answer, a request.")]
    = ServeConfig.timeout,
    log_level: Annotated[str, typer.Option(help="critical, error, warning, info or debug.")] = "info",
    allowed_host: Annotated[list[str] | None, typer.Option(
        help="A Host name clients may use besides localhost and --host (repeat; '*': any).")] = None,
    cors_origin: Annotated[list[str] | None, typer.Option(
        help="A web origin (https://site.example) whose pages may call the API (repeat; none by default).")]
    = None,
    api_key: Annotated[str | None, typer.Option(
        envvar=API_KEY_ENV, show_default=False,
        help="Require this key (X-API-Key header) for /solve and /model; set it when binding beyond localhost.")]
    = None,
    max_connections: Annotated[int, typer.Option(min=1, help="Open connections per process; more are closed.")]
    = ServeConfig.max_connections,
) -> None:
    """HTTP API: POST /solve (multipart 'file', JSON base64 'images' or an image/* body), GET /model,
    GET /healthz; its documentation at /docs."""
    from captchalab.inference.http import serve as run

    run(model, host, port, workers, max_loaded, threads, max_bytes, max_pixels, max_images, timeout, log_level,
        allowed_hosts=allowed_host or (), cors_origins=cors_origin or (), api_key=api_key,
        max_connections=max_connections)


@command("export")
def export_command(
    run: Annotated[Path, typer.Argument(help="Run folder.")],
    format: Annotated[str, typer.Option("--format", help="Only 'onnx'.")] = "onnx",
    out_file: Annotated[Path | None, typer.Option("--out", help="Default RUN/model.onnx.")] = None,
) -> None:
    """Standalone ONNX model with charset and preprocessing in its metadata."""
    from captchalab.exporting import export

    err.print(f"wrote {export(run, format, out_file)}")


@command("adapt")
def adapt_command(
    folder: Annotated[Path, typer.Argument(help="Unlabelled captchas of one style (a folder; labels.csv and file "
                                                "names are ignored).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the rounds, adapt.json and the final model "
                                                        "(OUT/model); rerun the command to continue a killed run.")],
    length: Annotated[str, typer.Option(help="Characters per captcha: 5 or a range, 4-6.")],
    charset: Annotated[str, typer.Option(help="Symbols the captchas use, ranges allowed: 0-9a-z.")],
    budget: Annotated[float, typer.Option(help="CPU minutes for everything (this process, all threads).")] = 30.0,
    rounds: Annotated[int, typer.Option(min=0, help="Self-training rounds at most (0: look-alikes only).")] = 3,
    min_confidence: Annotated[float, typer.Option("--min-confidence", help="Keep readings at least this "
                                                  "confident (calibrated) to learn from.")] = 0.9,
    synthetic: Annotated[int, typer.Option(help="Look-alike images rendered for the first reader.")] = 4000,
    init: Annotated[str, typer.Option(help="Start the first reader from: 'general' (the general reader shipped "
                                           "with captchalab), a run folder, or 'none' (random weights).")]
    = "general",
    as_json: JsonFlag = False,
) -> None:
    """A solver from unlabelled images: look-alikes of their style, then rounds of self-training on the
    readings that are confident and stable (docs/adapt.md). Prints each round and the model's own
    estimate of its accuracy; check it on a few labelled images with 'captchalab evaluate'."""
    from captchalab.adapting import adapt, summary
    from captchalab.report import share_above

    with err.status("adapting (look-alikes, then self-training rounds)"):
        folder_out = adapt(folder, out_dir, length, charset, budget, rounds, min_confidence, synthetic, init,
                           quiet=True)
    record = summary(folder_out)
    if as_json:
        print(json.dumps({k: record.get(k) for k in ("model", "estimated_accuracy", "estimate_range", "rounds",
                                                     "cpu_seconds", "stopped")}))
        return
    table = Table("round", "images kept", "mean confidence", "consistency", "share above threshold",
                  "estimated accuracy", title=str(folder))
    for r in record["rounds"]:
        table.add_row(str(r["round"]), f"{r['kept']} of {r['images']}", f"{r['mean_confidence']:.3f}",
                      f"{r['consistency']:.2f}" if "consistency" in r else "",
                      share_above(r, ""), f"{r['estimate']:.1%}" if "estimate" in r else "")
    out.print(table)
    span = record.get("estimate_range")
    between = f" (between {span[0]:.1%} and {span[1]:.1%})" if span else ""
    out.print(f"model: {escape(record['model'])}  (estimated accuracy {record['estimated_accuracy']:.1%}{between}; "
              f"{record['cpu_seconds'] / 60:.1f} CPU minutes)", highlight=False)
    err.print(f"stopped: {escape(record['stopped'])}", highlight=False)


@command("label")
def label_command(
    out_dir: Annotated[Path, typer.Argument(help="An adapt folder (captchalab adapt --out).")],
    sheet: Annotated[Path | None, typer.Option(help="The corrected file,label CSV (default OUT/check.csv: its "
                                                    "least certain readings, corrected by hand).")] = None,
    budget: Annotated[float, typer.Option(help="CPU minutes for the fine-tuning.")] = 10.0,
    as_json: JsonFlag = False,
) -> None:
    """Close the loop after adapt: correct the readings in OUT/check.csv by hand (every row then counts as
    a true label), and this fine-tunes OUT/model on them, the readings adapt kept and look-alikes."""
    from captchalab.adapting import label, summary

    with err.status("fine-tuning on the corrections"):
        label(out_dir, sheet, budget, quiet=True)
    labelled = summary(out_dir)["labelled"]
    if as_json:
        print(json.dumps(labelled))
        return
    out.print(f"model: {escape(str(out_dir / 'model'))}  ({labelled['corrections']} corrections, "
              f"{labelled['kept']} kept readings, from round {labelled['from_round']})", highlight=False)


@command("audit")
def audit_command(
    data: Annotated[Path, typer.Argument(help="Labelled captchas of one style (folder or CSV).")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for the report (default runs/audit-TIME).")]
    = None,
    test: Annotated[Path | None, typer.Option(help="Held-out test set (default: 20% of DATA).")] = None,
    budget: Annotated[float, typer.Option(help=(
        "CPU minutes for everything (this process, all threads). At least 5: below that no pretraining starts. "
        "Measurements that do not fit are skipped and the verdict is then INCONCLUSIVE, with the budget that "
        "would settle it. A complete audit pays for the pretraining and two trainings per label count and seed: "
        "on a 2-core machine cells took 1.6-2.5 CPU minutes and pretraining 6 "
        "(bench/results/audit_new_style.json), so about 40 for --seeds 1 and the default --counts."))] = 60.0,
    counts: Annotated[str, typer.Option(help="Label counts to measure, plus all of DATA.")] = "25,50,100,200,400",
    seeds: Annotated[int, typer.Option(min=1, max=10, help="Repeats per label count.")] = 3,
    pretrain_images: Annotated[int | None, typer.Option(help="Look-alike images for pretraining.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out folder.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Captcha strength: solve rate vs number of labelled images, with and without synthetic pretraining."""
    import time

    from captchalab.auditing import METHODS, audit, dataset_name
    from captchalab.auditing import skipped_lines as audit_skipped_lines
    from captchalab.errors import UsageError

    try:
        sizes = [int(c) for c in counts.split(",") if c.strip()]
    except ValueError:
        raise UsageError(f"--counts '{counts}' is not a comma-separated list of numbers, e.g. 25,50,100") from None
    folder = out_dir or Path("runs") / f"audit-{time.strftime('%Y%m%d-%H%M%S')}"
    record = audit(data, folder, test, budget, sizes, seeds, pretrain_images, quiet=True, force=force,
                   progress=None if as_json else lambda message: err.print(escape(message), highlight=False))
    if as_json:
        print(json.dumps({k: record[k] for k in ("verdict", "labels_needed", "curves", "cpu_seconds", "skipped")}))
        return
    table = Table("solve rate", *(f"labels needed: {m}" for m in METHODS), title=dataset_name(data))
    for rate in record["labels_needed"][METHODS[0]]:
        table.add_row(rate, *(_need(record["labels_needed"][m][rate]) for m in METHODS))
    out.print(table)
    out.print(escape(record["verdict"]["text"]), highlight=False)
    for line in audit_skipped_lines(record):
        err.print(f"skipped: {escape(line)}", highlight=False)
    err.print(f"report: {folder / 'index.html'}  ({record['cpu_seconds'] / 60:.1f} CPU minutes)")


def _need(need: dict) -> str:
    return {"=": "~{}", "<=": "<= {}", ">": "> {}"}.get(need["bound"], "-").format(need["labels"])


def _setups_help() -> str:
    from captchalab.diagnosis import default_setups

    return "**Setups** (for --only): " + "; ".join(f"`{s.name}`: {s.about}" for s in default_setups()) + "."


@command("diagnose", epilog=_setups_help())
def diagnose_command(
    data: Annotated[Path, typer.Argument(help="Labelled captchas of one length (folder or CSV).")],
    limit: Annotated[int, typer.Option(help="Images used (train + validation): more is slower and clearer.")] = 10000,
    epochs: Annotated[int, typer.Option(help="Epochs per experiment.")] = 8,
    plot: Annotated[Path, typer.Option(help="PNG: per-position accuracy over training.")] = Path("diagnose.png"),
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only this setup (repeatable; the setups "
                                                                 "are listed below).")] = None,
    skip_bad: SkipBad = False,
    as_json: JsonFlag = False,
) -> None:
    """The original question's fully-connected experiment: what keeps positions at chance, what fixes it."""
    from captchalab.diagnosis import diagnose

    def progress(name: str, index: int, total: int) -> None:
        err.print(f"[{index + 1}/{total}] training {name}", highlight=False)

    result = diagnose(data, limit, epochs, plot, only or (), skip_bad, None if as_json else progress)
    if as_json:
        print(json.dumps(result))
        return
    positions = len(result["runs"][0]["per_position"])
    table = Table("setup", *(f"pos {i + 1}" for i in range(positions)), "mean, each epoch",
                  title=f"validation accuracy %, epoch 1 -> {epochs} (chance {100 * result['chance']:.1f}%)")
    for run in result["runs"]:
        first, last = run["history"][0], run["history"][-1]
        table.add_row(run["setup"]["name"], *(f"{100 * a:.0f}->{100 * b:.0f}" for a, b in zip(first, last)),
                      " ".join(f"{100 * sum(h) / len(h):.0f}" for h in run["history"]),
                      style="green" if run["learned"] else ("red" if run["at_chance"] else None))
    out.print(table)
    out.print("green: every position at least 3x chance; red: at chance")
    for line in result["verdict"]:
        out.print(escape(line), highlight=False)
    err.print(f"plot: {result['plot']}  ({sum(r['cpu_seconds'] for r in result['runs']) / 60:.1f} CPU minutes)")


@command("models")
def list_models() -> None:
    """List the registered models and their options (set with train --set model.OPTION=VALUE), with defaults."""
    from captchalab.models import registry

    for name in registry.names():
        entry = registry.get(name)
        out.print(f"{name:8} {entry.summary}", highlight=False)
        options = " ".join(f"{k}={v}" for k, v in settings_defaults(entry.options_type, "model"))
        out.print(f"{'':8} {options}", highlight=False, style="dim")


def _report_skipped(skipped: list[str], data: Path) -> None:
    if skipped:
        shown = ", ".join(skipped[:10]) + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        err.print(f"skipped {len(skipped)} bad entr{'y' if len(skipped) == 1 else 'ies'} of {data}: {escape(shown)}",
                  highlight=False, soft_wrap=True)


def main() -> None:
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print as \udcXX, never crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    _tf.quiet_python()
    try:
        with extras_named():  # an optional extra is not installed: say which
            app()
    except CaptchaLabError as error:
        err.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)
    except OSError as error:  # the environment failed us (disk, permissions) outside a checked path
        where = f"{error.filename}: " if error.filename else ""
        err.print(f"[bold red]error:[/] {escape(where + (error.strerror or str(error)))}", highlight=False,
                  soft_wrap=True)
        sys.exit(1)
    except (KeyboardInterrupt, SystemExit) as leaving:
        interrupt = _interrupt_behind(leaving)
        if interrupt is None:
            raise
        # errors.Interrupted says how to continue ("resume with ...")
        err.print(escape(f"interrupted; {interrupt}" if str(interrupt) else "interrupted"), highlight=False,
                  soft_wrap=True)
        sys.exit(130)


def _interrupt_behind(error: BaseException | None) -> KeyboardInterrupt | None:
    """The Ctrl-C behind an exit: Typer turns KeyboardInterrupt into a silent exit 130."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, KeyboardInterrupt):
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None
