"""fit(config) -> run folder. The whole training loop, with atomic checkpoints and resume."""

from __future__ import annotations

from captchalab._tf import import_quietly

import_quietly()  # before Keras below, so TensorFlow's start-up noise stays off the terminal
# ruff: noqa: E402

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import keras
import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from captchalab import calibration, decoding, distribute, failure, files, heads, metrics, ood, report, runs
from captchalab import config as configuration
from captchalab.charset import Charset
from captchalab.config import SCHEDULES, RunConfig, TrainConfig, apply_overrides
from captchalab.data import pipeline
from captchalab.data.folder import Dataset, list_entries, load_dataset
from captchalab.data.images import ImageSize, resize_pixels, to_model_input
from captchalab.errors import DataError, Interrupted, ModelError, RunFolderError, UsageError
from captchalab.exporting import export_onnx as export  # aliased: train() has a flag export_onnx
from captchalab.models import registry
from captchalab.models.build import build_model, training_model
from captchalab.models.losses import loss_for
from captchalab.progress import counting, live_bar
from captchalab.transfer import adopt, transfer_weights

STATE = "state.json"
MIN_EPOCHS = 20  # the automatic budget's least number of passes over the training images
MAX_EPOCHS = 500  # ... and its most
FINAL_RATE = 0.02  # the cosine schedule ends at this share of the initial learning rate
PROGRESS = 0.01  # a validation loss this much (relatively) below the best so far counts as progress
PLATEAU_CER = 0.9  # a run whose best validation CER is above this has not left CTC's start-up plateau
PERFECT_EPOCHS = 4  # stop after this many epochs in a row read every validation image ...
# ... and after as many more as it takes to have read this many validation images perfectly in a row:
# 3 images read right 4 times say little (the zoo's captcha_images_v2 cell at 25 labels stopped after
# 5 epochs, 57.7% on its test set), 94 images 4 times say more.
PERFECT_IMAGES = 400
PATIENT_AFTER = 0.5  # share of a cosine budget before which no stopping rule ends a run (stopping_floor)
FIT_IMAGES = 500  # training images read again at the end, to tell memorising from not fitting


Score = Annotated[float, Field(allow_inf_nan=True)]


class _Epoch(BaseModel):
    """One history record: what ranking the best checkpoint needs; other measures pass through."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=True)
    epoch: Annotated[int, Field(ge=1, le=1_000_000)]
    val_sequence_accuracy: Score
    val_cer: Score
    val_loss: Score


# A history record stays a plain dict (history.json, the curves, failure.py read it), checked as an _Epoch.
EpochRecord = Annotated[dict[str, Any], BeforeValidator(lambda v: _Epoch.model_validate(v).model_dump()
                                                        if isinstance(v, dict) else v)]


class TrainingState(BaseModel):
    """The training loop's state, saved as checkpoints/state.json after every epoch: what --resume
    continues from. Typed attributes in memory; checked against these types when read back."""

    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=True)
    data: Annotated[str, Field(min_length=1)]  # the training set, resolved: --resume reads it again
    val: str | None = None
    epoch: Annotated[int, Field(ge=0, le=1_000_000)]  # epochs finished
    history: list[EpochRecord]
    best: Annotated[list[Score], Field(max_length=3)] | None = None  # checkpoint_rank of the best epoch
    wait: Annotated[int, Field(ge=0)] = 0  # epochs without progress (early stopping)
    learning_rate: Annotated[float, Field(gt=0.0, le=10.0)]
    skipped: list[str] = Field(default_factory=list)  # bad files left out with --skip-bad
    init: str | None = None  # the pretrained run of --init
    cpu_seconds: Annotated[float, Field(ge=0.0)] = 0.0  # of every process that trained this run
    stopped: bool = False  # early stopping or a time limit ended the run
    perfect: Annotated[int, Field(ge=0)] = 0  # epochs in a row that read every validation image
    bests: dict[str, Score] | None = None  # best accuracy, CER and loss so far, each on its own
    init_report: dict[str, Any] | None = None  # what transfer_weights copied from --init
    stopped_by: str | None = None  # the time limit that ended the run

    def save(self, folder: Path) -> None:
        runs.write_json(folder / runs.CHECKPOINTS / STATE, self.model_dump())


@dataclass(frozen=True)
class Split:
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_labels: tuple[str, ...]
    val_y: np.ndarray


def train(
    data: str | Path,
    val: str | Path | None = None,
    model: str | None = None,
    out: str | Path | None = None,
    epochs: int | None = None,
    overrides: tuple[str, ...] | list[str] = (),
    charset: str | None = None,
    case_insensitive: bool = False,
    skip_bad: bool = False,
    force: bool = False,
    resume: str | Path | None = None,
    export_onnx: bool = True,
    quiet: bool = False,
    init: str | Path | None = runs.AUTO,
    train_config: TrainConfig | None = None,
) -> Path:
    """Train a model on DATA and return its run folder (see docs/design.md).

    ``model`` defaults to crnn, or to the model of ``init``: a pretrained run to start from, "general"
    (the general reader shipped with the package), None/"none" (random weights) or "auto" (the default:
    the general reader where it fits, see ``_auto_init``); its model options and image size are kept (see
    transfer.py). ``train_config``: the training
    settings as a typed value (default TrainConfig()); ``epochs`` and then the ``"key=value"``
    ``overrides`` of the command line (``--set``) apply on top of it.
    """
    if resume is not None:
        return _resume(Path(resume), export_onnx, quiet, skip_bad, epochs)
    init = runs.init_run(_auto_init(data, model, overrides) if str(init) == runs.AUTO else init)
    init_config = runs.read_config(init) if init is not None else None
    entry = registry.get(model or (init_config.model if init_config else "crnn"))
    size = init_config.image if init_config else None
    train_set = _load(data, charset, case_insensitive, skip_bad, size, quiet)
    config = RunConfig(
        model=entry.name,
        head=entry.head,
        charset=train_set.charset,
        image=entry.input_size(train_set.size, train_set.max_length) if entry.input_size else train_set.size,
        max_length=train_set.max_length,
        label_lengths=(train_set.min_length, train_set.max_length),
        options=entry.options_type(),
        train=train_config or TrainConfig(),
    )
    if init_config is not None:
        config = adopt(config, init_config, str(init))
    config = apply_overrides(config, [f"train.epochs={epochs}"] if epochs else [])
    config = apply_overrides(config, overrides)
    fit_images = len(train_set) - (0 if val is not None else pipeline.held_out(len(train_set),
                                                                              config.train.val_fraction))
    config = _with_epoch_budget(config, fit_images, entry.least_epochs)
    _check_train_config(config.train)
    _check_input(config)
    if config.image.height > train_set.size.height or config.image.width > train_set.size.width or \
            config.image.channels != train_set.size.channels:
        # read at the pretrained run's size, but an override asks for more (or colour): never upsample what was read
        train_set = _load(data, train_set.charset, case_insensitive, skip_bad, config.image, quiet)
    train_set = _at_size(train_set, config.image)
    val_set = _load(val, train_set.charset, case_insensitive, skip_bad, config.image, quiet) if val else None
    out = Path(out) if out else runs.default_out(entry.name)
    _check_loadable(config, data, out)
    runs.check_new(out, force)  # before the lock file goes in: a refused folder is left as it was
    split = _split(config, train_set, val_set)
    skipped = [*train_set.skipped, *(val_set.skipped if val_set else ())]
    state = TrainingState(data=str(Path(data).resolve()), val=str(Path(val).resolve()) if val else None, epoch=0,
                          history=[], learning_rate=config.train.learning_rate, skipped=skipped,
                          init=str(Path(init).resolve()) if init else None)
    with runs.locked(out) as folder, _interrupted(folder):
        runs.create(folder, force=force)
        runs.write_json(folder / "config.json", config.to_dict())
        return _fit(config, folder, split, state, export_onnx, quiet)


def _auto_init(data: str | Path, model: str | None, overrides: tuple[str, ...] | list[str]) -> str | None:
    """The default start: the shipped general reader when it can be this run's network, else random weights.

    Fine-tuning it beat training from scratch on all 6 zoo cells trained both ways, for less CPU where
    both ran on one CPU model (docs/recipe.md), so it is where a crnn run starts unless the run asks for another network
    (--model, --set model.* / options.* / image.* but image.channels / max_length) or labels longer than the
    reader's slots."""
    general = runs.read_config(runs.init_run(runs.GENERAL))
    network = ("model.", "options.", "image.", "max_length")  # --set keys that change the network
    # ... except colour: the grey reader's first convolution is widened to three channels (transfer.py)
    changed = [o for o in overrides if o.startswith(network) and not o.startswith("image.channels=")]
    if (model or general.model) != general.model or changed:
        return None
    _, entries = list_entries(data)
    return runs.GENERAL if max((len(label) for _, label in entries), default=0) <= general.max_length else None


def _check_loadable(config: RunConfig, data: str | Path, out: Path) -> None:
    """Refuse, before any work, a run the loader would refuse: the same schema checks both."""
    try:
        configuration.check(config, out / "config.json")
    except ModelError as error:
        raise DataError(f"{data}: the model it would train could not be loaded ({error}); fix the data "
                        "or the --set options") from None


@contextmanager
def _interrupted(folder: Path) -> Iterator[None]:
    """Ctrl-C while training: say how to continue (the CLI prints it and exits 130)."""
    try:
        yield
    except KeyboardInterrupt:
        if (folder / runs.CHECKPOINTS / STATE).exists():
            raise Interrupted(f"resume with 'captchalab train --resume {folder}'") from None
        raise Interrupted(f"no epoch had finished; start again with '--out {folder} --force'") from None


def _load(
    path: str | Path,
    charset: str | Charset | None,
    case_insensitive: bool,
    skip_bad: bool,
    size: Any,
    quiet: bool,
) -> Dataset:
    fixed = Charset.parse(charset, case_insensitive) if isinstance(charset, str) else charset
    with counting(f"reading {path}", quiet) as advance:
        return load_dataset(path, fixed, size, skip_bad, case_insensitive, advance)


def _at_size(dataset: Dataset, size: ImageSize) -> Dataset:
    """The dataset resized to the model's input size, when an override changed it."""
    if dataset.size == size:
        return dataset
    return replace(dataset, pixels=resize_pixels(dataset.pixels, size))


def auto_epochs(images: int, batch_size: int, min_steps: int, least: int = 0) -> int:
    """The epoch budget for ``images`` training images: enough passes for ``min_steps``
    optimizer steps, and at least MIN_EPOCHS passes (or ``least``, a slow model's own floor, if higher),
    at most MAX_EPOCHS (a handful of images would otherwise spend more time validating and
    saving than training).

    A fixed number of epochs gives a small set few steps (450 training images are 29 steps of
    16 an epoch) and a large one many; a fixed number of steps gives a large set few passes.
    """
    steps_per_epoch = max(1, math.ceil(images / batch_size))
    return min(MAX_EPOCHS, max(MIN_EPOCHS, least, math.ceil(min_steps / steps_per_epoch)))


def perfect_epochs(val_images: int) -> int:
    """How many epochs in a row must read every one of ``val_images`` validation images to stop a run."""
    return max(PERFECT_EPOCHS, math.ceil(PERFECT_IMAGES / max(1, val_images)))


def stopping_floor(train_config: TrainConfig) -> int:
    """The epoch before which neither patience nor a perfect validation score ends a run: half a cosine
    schedule's budget. Its first half runs at a high rate, where a small validation set says little.
    Patience: 50 validation images go up and down enough to look flat; on 500 labels patience had ended
    the zoo's cells after 22-40 of 87 epochs; with the floor they read 0.9 points more on average (9 cells;
    within one seed's spread) for 1.55 times the CPU, about 100 CPU seconds a cell (docs/recipe.md): a
    cheap guard, not a measured gain. Perfect epochs: captcha_images_v2's 500-label cell read its 50
    validation images perfectly from the first epochs and stopped after 9 and 12 (two starting readers),
    97.1% on its test set both times; with the floor it ran 44 epochs and read 99.0% (stage 008)."""
    return math.ceil(train_config.epochs * PATIENT_AFTER) if train_config.schedule == "cosine" else 0


def _with_epoch_budget(config: RunConfig, images: int, least: int) -> RunConfig:
    if config.train.epochs:
        return config
    epochs = auto_epochs(images, config.train.batch_size * config.train.devices, config.train.min_steps, least)
    return replace(config, train=replace(config.train, epochs=epochs))


def learning_rate_at(train_config: TrainConfig, progress: float) -> float:
    """The cosine schedule's rate at ``progress`` (0: the start, 1: the end of the budget)."""
    progress = min(1.0, max(0.0, progress))
    return train_config.learning_rate * (FINAL_RATE + (1 - FINAL_RATE) * 0.5 * (1 + math.cos(math.pi * progress)))


def _check_input(config: RunConfig) -> None:
    if config.image.channels not in (1, 3):
        raise UsageError(f"image.channels must be 1 (grey) or 3 (colour), got {config.image.channels}")
    if config.image.channels == 3 and not config.head.colour:
        raise UsageError(f"a '{config.model}' model reads grey images only; leave out --set image.channels=3")


def _check_train_config(train_config: TrainConfig) -> None:
    if train_config.epochs < 1 or train_config.batch_size < 1 or train_config.learning_rate <= 0:
        raise UsageError("epochs and batch_size must be at least 1 and learning_rate above 0")
    if train_config.schedule not in SCHEDULES:
        raise UsageError(f"train.schedule must be one of {', '.join(SCHEDULES)}, got '{train_config.schedule}'")
    if not 0 < train_config.val_fraction < 1:
        raise UsageError("train.val_fraction must be between 0 and 1")


def _split(config: RunConfig, train_set: Dataset, val_set: Dataset | None) -> Split:
    train_set, val_set = _segmented(config, train_set), _segmented(config, val_set)
    encode = lambda labels: config.charset.encode_batch(labels, config.max_length)  # noqa: E731
    if val_set is not None:
        return Split(train_set.pixels, encode(train_set.labels), val_set.pixels, val_set.labels,
                     encode(val_set.labels))
    if len(train_set) < 2:
        raise UsageError(f"{train_set.source}: need at least 2 images to hold one out for validation")
    fit_idx, val_idx = pipeline.split(len(train_set), config.train.val_fraction, config.train.seed)
    labels = np.array(train_set.labels, dtype=object)
    return Split(train_set.pixels[fit_idx], encode(labels[fit_idx]), train_set.pixels[val_idx],
                 tuple(labels[val_idx]), encode(labels[val_idx]))


def _segmented(config: RunConfig, dataset: Dataset | None) -> Dataset | None:
    """The images as the head prepares them (a segment model sees its characters already cut into cells)."""
    if dataset is None:
        return dataset
    return replace(dataset, pixels=config.head.prepare(dataset.pixels, config.max_length))


def _compile(trainer: keras.Model, config: RunConfig, learning_rate: float) -> None:
    optimizer = keras.optimizers.Adam(learning_rate, clipnorm=config.train.clipnorm or None)
    if len(trainer.outputs) == 1:
        trainer.compile(optimizer=optimizer, loss=loss_for(config.head.loss))
        return
    # The second output is a per-slot reading of the same features (see models/crnn.py).
    trainer.compile(optimizer=optimizer, loss=[loss_for(config.head.loss), loss_for(heads.POSITIONAL.loss)],
                    loss_weights=[1.0, config.options.alignment_weight])


def _targets(trainer: keras.Model, y: Any) -> Any:
    return y if len(trainer.outputs) == 1 else (y, y)


def _fit(
    config: RunConfig, folder: Path, split: Split, state: TrainingState, export_onnx: bool, quiet: bool
) -> Path:
    t = config.train
    if t.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(t.threads)
        tf.config.threading.set_inter_op_parallelism_threads(t.threads)
    strategy = distribute.strategy(t.devices)  # before the seed: setting up devices may draw random numbers
    keras.utils.set_random_seed(t.seed + state.epoch)
    with strategy.scope():  # variables mirrored on each device; the default strategy for one
        model = build_model(config)
        trainer = training_model(model, config)
        if not state.epoch and state.init:
            state.init_report = transfer_weights(model, config, Path(state.init))
        if state.epoch:
            _load_checkpoint(trainer, folder)
        _compile(trainer, config, state.learning_rate)
    batch = t.batch_size * strategy.num_replicas_in_sync  # the global batch, split across the devices
    data = pipeline.batches(split.train_x, split.train_y, batch, t.seed + state.epoch, t.augment, distort=t.distort)
    data = data.map(lambda x, y: (x, _targets(trainer, y)))
    callbacks = [
        EpochEnd(config, folder, split, state, model),
        TrainingProgress(t.epochs, quiet, initial=state.epoch),
    ]
    trainer.fit(data, epochs=t.epochs, initial_epoch=state.epoch, callbacks=callbacks, verbose=0)
    return _finish(model, trainer, config, folder, split, state, export_onnx)


def _weights_only(model: keras.Model, config: RunConfig) -> keras.Model:
    """An uncompiled copy: model.keras is read for its weights alone (runs.load_keras), and a compiled
    model would save its optimizer's state beside them, three times the size."""
    if getattr(model, "optimizer", None) is None:
        return model
    plain = build_model(config)
    plain.set_weights(model.get_weights())
    return plain


def _finish(
    model: keras.Model,
    trainer: keras.Model,
    config: RunConfig,
    folder: Path,
    split: Split,
    state: TrainingState,
    export_onnx: bool,
) -> Path:
    """Keep the best epoch's weights; save, calibrate, score and export the inference model."""
    best = folder / runs.CHECKPOINTS / "best.weights.h5"
    if best.exists():
        files.regular_file(best, RunFolderError)
        trainer.load_weights(best)
    runs.atomic_write(folder / "model.keras", lambda tmp: _weights_only(model, config).save(tmp))
    _calibrate_and_plot(model, config, folder, split, state.history)
    runs.write_json(folder / "history.json", state.history)
    summary = _scored(model, config, split.val_x, split.val_labels)
    summary.update({"split": "validation", "model": config.model, "charset": config.charset.symbols,
                    "train_cpu_seconds": round(state.cpu_seconds, 1),
                    "epochs_run": state.epoch, "epochs_budget": config.train.epochs,
                    "init": state.init})  # where the weights started (--init, resolved): None = random
    summary["training_images"] = _training_fit(model, config, split)
    if summary["sequence_accuracy"] < failure.NEAR_ZERO:
        summary["diagnosis"] = _diagnosis(model, config, split, state.history, pretrained=bool(state.init))
    elif fit := failure.diagnose_fit(summary["training_images"]["sequence_accuracy"], summary["sequence_accuracy"],
                                     summary["training_images"]["n"]):
        summary["diagnosis"] = fit
    if note := failure.missing_symbols(config.charset):
        summary["notes"] = [note]
    if state.skipped:
        summary["skipped"] = state.skipped
    if state.stopped_by:
        summary["stopped_by"] = state.stopped_by
    runs.write_json(folder / "metrics.json", summary)
    if export_onnx:
        export(folder, model=model, config=config)
    _prune_checkpoints(folder)
    return folder


def _prune_checkpoints(folder: Path) -> None:
    """A finished run keeps one trainer checkpoint: the best epoch's, which --resume --epochs N
    continues from (model.keras holds the same weights without the training-only heads). The last
    epoch's is a second copy of the whole trainer, worth keeping only while a kill can interrupt."""
    if (folder / runs.CHECKPOINTS / "best.weights.h5").exists():
        (folder / runs.CHECKPOINTS / "last.weights.h5").unlink(missing_ok=True)


def _training_fit(model: keras.Model, config: RunConfig, split: Split) -> dict[str, Any]:
    """The saved model's metrics on (up to FIT_IMAGES of) its own training images, read clean:
    far above validation, it memorises; low, it has not fitted the style (failure.diagnose_fit)."""
    rows = np.random.default_rng(0).permutation(len(split.train_x))[:FIT_IMAGES]
    truth = [config.charset.decode(code) for code in split.train_y[rows]]
    fit = _scored(model, config, split.train_x[rows], truth)
    return {key: fit[key] for key in ("n", "sequence_accuracy", "char_accuracy", "cer")}


def _scored(model: keras.Model, config: RunConfig, pixels: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """metrics.summarize of the top-1 readings of ``pixels`` against ``labels``."""
    texts = [p.text for p in predict_texts(model, config, pixels)]
    return metrics.summarize(texts, labels, config.head.length_limit(config.max_length))


def _diagnosis(model: keras.Model, config: RunConfig, split: Split, history: list, pretrained: bool) -> list:
    # The best paths: what the network outputs step by step (an all-blank plateau shows there,
    # while the most probable reading of a plateaued CTC model is rarely empty).
    probs = decoding.softmax(predict_logits(model, split.val_x))
    texts = [p.text for p in config.head.greedy(probs, config.charset)]
    steps = None if config.head.fixed_length else int(model.output.shape[1])
    return failure.diagnose_run(history, texts, config.head, config.image.width, steps, config.max_length,
                                len(split.train_y), int(np.count_nonzero(split.train_y)),
                                config.charset.num_classes - 1, pretrained)


def _calibrate_and_plot(model: keras.Model, config: RunConfig, folder: Path, split: Split, history: list) -> None:
    """Fit the confidence temperature and record the OOD reference on the validation images;
    draw the loss/accuracy curves."""
    logits = predict_logits(model, split.val_x)
    calibration.save(folder, calibration.fit(logits, split.val_labels, config.head, config.charset))
    ood.save(folder, ood.reference(logits))
    report.save_training_curves(folder / report.CURVES, history)


def predict_logits(model: keras.Model, pixels: np.ndarray) -> np.ndarray:
    return model.predict(to_model_input(pixels), batch_size=256, verbose=0)


def predict_texts(model: keras.Model, config: RunConfig, pixels: np.ndarray) -> list[decoding.Prediction]:
    """The top-1 readings, as the predictor gives them (heads.decode, in the training labels' length range)."""
    probs = decoding.softmax(predict_logits(model, pixels))
    rules = config.reading_constraints(None)
    return [r[0] for r in heads.decode(probs, config.head, config.charset, constraints=rules)]


def checkpoint_rank(record: dict) -> list[float]:
    """How epochs compare: sequence accuracy, then CER, then loss (higher is better)."""
    return [record["val_sequence_accuracy"], -record["val_cer"], -record["val_loss"]]


def refresh_batch_norm(
    model: keras.Model, pixels: np.ndarray, images: int = 1024, batch_size: int = 64, keep_dropout: bool = False
) -> None:
    """Recompute every BatchNormalization layer's statistics for the weights as they are now.

    The moving averages kept while training trail the weights by about a hundred steps, so
    validation (and with it early stopping and the best checkpoint) judges stale statistics.
    An equal-weight average over clean training images at frozen weights ("precise BN")
    removes the lag: 100% instead of 99.0% on captcha_images_v2 in two seeds, epoch-to-epoch
    validation swings halved (bench/precise_bn.py). Only the layers up to the batch norms run
    (no LSTMs), so it costs little. Dropout is off for the pass: a batch norm behind a dropout
    layer must learn the statistics it will meet at inference, not those of dropped features
    (``keep_dropout`` leaves it on, only to measure that choice: bench/precise_bn.py).
    """
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms or not len(pixels):
        return
    upstream = keras.Model(model.input, [layer.output for layer in norms])
    drops = [] if keep_dropout else [layer for layer in upstream.layers if isinstance(layer, keras.layers.Dropout)]
    momenta, rates = [layer.momentum for layer in norms], [layer.rate for layer in drops]
    try:
        for layer in drops:
            layer.rate = 0.0
        for step, start in enumerate(range(0, min(images, len(pixels)), batch_size)):
            for layer in norms:  # moving = mean of the batch statistics seen so far
                layer.momentum = step / (step + 1)
            upstream(to_model_input(pixels[start : start + batch_size]), training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
        for layer, rate in zip(drops, rates):
            layer.rate = rate


def _rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The learning rate as a number (a MirroredVariable under train.devices > 1 has no float())."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class EpochEnd(keras.callbacks.Callback):
    """Validation metrics, atomic checkpoints, early stopping and LR decay, once per epoch.

    Kept in one place so that the state saved for ``--resume`` is always consistent.
    """

    def __init__(self, config: RunConfig, folder: Path, split: Split, state: TrainingState,
                 inference: keras.Model) -> None:
        super().__init__()
        self.config, self.folder, self.split, self.state = config, folder, split, state
        self.inference = inference  # self.model is the network being trained, maybe with extra heads
        self.started = self.began = time.time()
        self.began_cpu = self.epoch_cpu = time.process_time()
        self.cpu_before = state.cpu_seconds  # spent by earlier processes of a resumed run

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        # The cosine follows the epoch budget only: a wall-clock or CPU limit (train.max_minutes)
        # stops a run but does not speed up its decay: under make demo's six-minute limit a decay
        # that followed the clock had the rate near its floor by the time the model left CTC's
        # start-up plateau.
        if self.config.train.schedule == "cosine":
            self.model.optimizer.learning_rate = learning_rate_at(self.config.train, epoch / self.config.train.epochs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if self.config.train.precise_bn:
            refresh_batch_norm(self.inference, self.split.train_x)
        summary, val_loss = self._validate()
        record = {"epoch": epoch + 1, "loss": float(logs.get("loss", np.nan)), "val_loss": val_loss,
                  "val_sequence_accuracy": summary["sequence_accuracy"],
                  "val_char_accuracy": summary["char_accuracy"], "val_cer": summary["cer"],
                  "learning_rate": _rate(self.model.optimizer),
                  "seconds": round(time.time() - self.started, 2),
                  "cpu_seconds": round(time.process_time() - self.epoch_cpu, 2)}
        self.started, self.epoch_cpu = time.time(), time.process_time()
        # counted at every epoch, so a killed run's CPU time is not lost on --resume
        self.state.cpu_seconds = round(self.cpu_before + self.epoch_cpu - self.began_cpu, 1)
        self.state.history.append(record)
        logs.update({k: v for k, v in record.items() if k.startswith("val_")})
        self._track_best(record)
        self._check_budget()
        self._save(epoch + 1)

    def _validate(self) -> tuple[dict, float]:
        """Metrics and loss of the inference model: the loss of its own head only, since a
        training-only head (crnn's per-slot reading) can overfit while the model it trains
        still improves."""
        logits = predict_logits(self.inference, self.split.val_x)
        # The greedy readings: a search for each uncertain image would cost every epoch what it costs
        # once at the end; they differ only where the best path holds less than half the probability.
        texts = [p.text for p in self.config.head.greedy(decoding.softmax(logits), self.config.charset)]
        loss = keras.ops.convert_to_numpy(loss_for(self.config.head.loss)(self.split.val_y, logits))
        return metrics.summarize(texts, self.split.val_labels), float(np.mean(loss))

    def _track_best(self, record: dict) -> None:
        """Keep the best checkpoint; stop when validation has stopped improving.

        Best is the highest sequence accuracy, then the lowest CER, then the lowest loss.
        CER and loss move long before the first whole captcha is read (CTC's start-up
        plateau), so progress counts on any of the three: a run that is still learning is
        neither stopped nor has its learning rate cut while its sequence accuracy sits at 0.
        On the plateau itself the validation loss can creep down by less than PROGRESS per
        epoch for many epochs before the model reads its first characters, so no patience
        runs out there: the epoch budget alone ends a run that never leaves it.
        """
        state, score = self.state, checkpoint_rank(record)
        if state.best is None or score > state.best:
            state.best = score
            runs.atomic_write(self.folder / runs.CHECKPOINTS / "best.weights.h5", self.model.save_weights)
        bests = state.bests or {"accuracy": -1.0, "cer": math.inf, "loss": math.inf}
        progressed = (record["val_sequence_accuracy"] > bests["accuracy"] or record["val_cer"] < bests["cer"] - 1e-3
                      or record["val_loss"] < bests["loss"] * (1 - PROGRESS))
        state.bests = bests
        bests.update(accuracy=max(bests["accuracy"], record["val_sequence_accuracy"]),
                     cer=min(bests["cer"], record["val_cer"]), loss=min(bests["loss"], record["val_loss"]))
        state.wait = 0 if progressed else state.wait + 1
        state.perfect = state.perfect + 1 if record["val_sequence_accuracy"] == 1.0 else 0
        t = self.config.train
        if self.config.head.blank_plateau and bests["cer"] > PLATEAU_CER:  # only the budget ends this plateau
            state.wait = 0
        if t.schedule == "plateau" and state.wait and state.wait % max(1, t.patience // 3) == 0:
            self.model.optimizer.learning_rate = _rate(self.model.optimizer) * 0.5
        done = state.wait >= t.patience or state.perfect >= perfect_epochs(len(self.split.val_labels))
        if done and record["epoch"] >= max(t.min_epochs, stopping_floor(t)):
            self.model.stop_training = True

    def _check_budget(self) -> None:
        budget, cpu_budget = self.config.train.max_minutes, self.config.train.max_cpu_minutes
        over = [f"train.max_minutes={budget:g}"] if budget and time.time() - self.began > budget * 60 else []
        if cpu_budget and time.process_time() - self.began_cpu > cpu_budget * 60:
            over.append(f"train.max_cpu_minutes={cpu_budget:g}")
        if over and not self.model.stop_training:  # said in metrics.json and by the CLI: not a silent stop
            self.state.stopped_by = " and ".join(over)
            self.model.stop_training = True

    def _save(self, epoch: int) -> None:
        checkpoints = self.folder / runs.CHECKPOINTS
        runs.atomic_write(checkpoints / "last.weights.h5", self.model.save_weights)
        self.state.epoch, self.state.stopped = epoch, bool(self.model.stop_training)
        self.state.learning_rate = _rate(self.model.optimizer)
        self.state.save(self.folder)
        runs.write_json(self.folder / "history.json", self.state.history)


class TrainingProgress(keras.callbacks.Callback):
    """One bar over epochs with the latest loss and validation accuracy."""

    def __init__(self, epochs: int, quiet: bool, initial: int = 0) -> None:
        super().__init__()
        self.epochs, self.quiet, self.initial = epochs, quiet, initial

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.bar = live_bar("training", self.epochs, self.quiet, completed=self.initial)
        self.bar.__enter__()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.bar.update(epoch + 1, f"loss {logs.get('loss', float('nan')):.3f}  "
                                   f"val acc {logs.get('val_sequence_accuracy', 0.0):.3f}")

    def on_train_end(self, logs: dict | None = None) -> None:
        self.bar.__exit__(None, None, None)


def _resume(folder: Path, export_onnx: bool, quiet: bool, skip_bad: bool, epochs: int | None = None) -> Path:
    """Continue a run; ``epochs`` moves its limit (at or below the epochs done: finish now, from the best one)."""
    if not folder.is_dir():
        raise RunFolderError(f"{folder}: no such run folder to resume")
    with runs.locked(folder), _interrupted(folder):
        return _continue(folder, export_onnx, quiet, skip_bad, epochs)


def _continue(folder: Path, export_onnx: bool, quiet: bool, skip_bad: bool, epochs: int | None) -> Path:
    state = _read_state(folder)
    config = runs.read_config(folder)
    runs.remove_temporaries(folder)
    if epochs is not None:
        config = apply_overrides(config, [f"train.epochs={epochs}"])
        _check_train_config(config.train)
        runs.write_json(folder / "config.json", config.to_dict())
        state.stopped = state.stopped and epochs <= state.epoch  # a larger limit means go on
    _rescore_best(state)
    if state.stopped or state.epoch >= config.train.epochs:
        state.epoch = max(state.epoch, config.train.epochs)
        model = build_model(config)
        trainer = training_model(model, config)
        _load_checkpoint(trainer, folder)
        split = _split(config, *_datasets(config, state, skip_bad, quiet))
        return _finish(model, trainer, config, folder, split, state, export_onnx)
    state.stopped_by = None  # going on: an earlier time limit no longer says why it ends
    split = _split(config, *_datasets(config, state, skip_bad, quiet))
    return _fit(config, folder, split, state, export_onnx, quiet)


def _rescore_best(state: TrainingState) -> None:
    """A run saved before the best checkpoint was ranked by [accuracy, -CER, -loss] gets its
    best score in today's form from its history (its best.weights.h5 stays the one it chose)."""
    if state.best is None or len(state.best) == 3 or not state.history:
        return
    state.best = max(checkpoint_rank(h) for h in state.history)


def _read_state(folder: Path) -> TrainingState:
    """checkpoints/state.json, checked against its schema: a run killed before its first epoch ended has none."""
    state_file = folder / runs.CHECKPOINTS / STATE
    fix = "start the run again with --force"
    try:
        data = files.read_json(state_file, RunFolderError, fix)
    except FileNotFoundError:
        raise RunFolderError(f"{folder}: nothing to resume (no epoch finished, no {runs.CHECKPOINTS}/{STATE}); "
                             f"start it again with --out {folder} --force") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{state_file}: damaged (not a JSON object); {fix}")
    return files.validate(TrainingState, data, str(state_file), RunFolderError, "resume state", fix)


def _load_checkpoint(model: keras.Model, folder: Path) -> None:
    """The last epoch's weights; a finished run kept only its best epoch's (_prune_checkpoints)."""
    path = folder / runs.CHECKPOINTS / "last.weights.h5"
    if not path.exists() and (folder / runs.CHECKPOINTS / "best.weights.h5").exists():
        path = folder / runs.CHECKPOINTS / "best.weights.h5"
    try:
        files.regular_file(path, RunFolderError)  # h5py would block forever on a pipe
        model.load_weights(path)
    except RunFolderError:
        raise
    except Exception as error:  # Keras and h5py raise many types for missing or damaged files
        raise RunFolderError(f"{path}: cannot load the checkpoint ({type(error).__name__}); start the run again "
                             "with --force") from None


def _datasets(config: RunConfig, state: TrainingState, skip_bad: bool, quiet: bool) -> tuple[Dataset, Dataset | None]:
    fold = config.charset.case_insensitive
    train_set = _load(state.data, config.charset, fold, skip_bad, config.image, quiet)
    val_set = _load(state.val, config.charset, fold, skip_bad, config.image, quiet) if state.val else None
    return train_set, val_set


