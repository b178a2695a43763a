"""``captchalab diagnose DATA``: the fully-connected experiment of the original question, measured.

The question: flattened pixels into dense layers, one softmax per character position, the
per-position cross-entropies summed with ``reduce_sum``: the first position learns alone,
two or more stay at chance; MSE on the 5x36 one-hot vector fails too. Is it the loss, the
network, or the characters' shifting positions?

We answer by experiment on the user's own images, in short bounded runs (a subset of the
images, a few epochs each): first the report itself (position 1 alone, position 2 alone, 1+2,
all five, with the live first-layer ReLUs over the steps), the asker's network with fixes on
top, the N(0,1) variant with one thing changed at a time, and a setup that works with one
thing taken back at a time. A factor is a *cause* when
taking it back from the working setup puts accuracy back near chance; the verdict names
the causes and the fix from these measurements only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from captchalab._tf import import_quietly
from captchalab.data import images
from captchalab.data.folder import load_dataset
from captchalab.errors import UsageError

LEARNED = 3.0  # a position has learned when its accuracy is at least this many times chance
AT_CHANCE = 1.5  # a run is at chance when its mean accuracy is below this many times chance


@dataclass(frozen=True)
class Setup:
    """One configuration of the fully-connected network and its training."""

    name: str
    about: str
    # "raw" pixels 0..255, "scaled" /255, "centred" /255 - 0.5, "inverted" 1 - /255 (ink as the signal)
    inputs: str = "raw"
    loss: str = "sum"  # "sum" (reduce_sum over images and positions), "mean", or "mse" on the one-hot vector
    # "normal": N(0, 1) weights as tf.random_normal gives; "he": He-normal; "truncated": the TensorFlow 1
    # tutorials' tf.truncated_normal(stddev=init_std) weights with constant 0.1 biases
    init: str = "normal"
    init_std: float = 0.1
    optimizer: str = "adam"  # "adam" or "sgd"
    learning_rate: float = 1e-3
    batch_norm: bool = False
    pool: int = 1  # average-pool the image by this factor before flattening
    positions: tuple[int, ...] = ()  # positions (from 1) whose cross-entropy is in the loss; empty: all
    hidden: tuple[int, ...] = ()  # dense ReLU layers; empty: the run's DiagnoseConfig.hidden
    batch_size: int = 0  # 0: the run's DiagnoseConfig.batch_size


# The question as a TensorFlow 1 tutorial of 2018 had people write it: pixels /255 - 0.5,
# tf.truncated_normal(stddev=0.1) weights and 0.1 biases, one ReLU layer, reduce_sum of the per-position
# softmax cross-entropies, AdamOptimizer(1e-4), batch 32. bench/fully_connected.py's `asker` stage searched
# that space for the settings that show what the asker reported (docs/fully-connected.md).
ASKER = Setup("asker", "the question as TF1 tutorials wrote it: pixels /255-0.5, truncated-normal(0.1) weights, "
              "0.1 biases, one ReLU layer of 256, summed cross-entropy, Adam 1e-4, batch 32",
              inputs="centred", init="truncated", learning_rate=1e-4, hidden=(256,), batch_size=32)
# The variant the page measured first: raw pixels and N(0, 1) weights (tf.random_normal's default).
NORMAL = Setup("normal", "raw pixels, N(0,1) weights, two ReLU layers of 256, summed cross-entropy, Adam 1e-3")
FIX = Setup("fix", "inverted inputs, He init, mean cross-entropy, 4x pooled input, Adam",
            inputs="inverted", loss="mean", init="he", pool=4)


def asker_setups() -> list[Setup]:
    """The asker's report, row by row: position 1 alone, another alone, 1 and 2, all five."""
    return [
        replace(ASKER, name="asker-position1", about="the question, only position 1 in the loss", positions=(1,)),
        replace(ASKER, name="asker-position2", about="the question, only position 2 in the loss", positions=(2,)),
        replace(ASKER, name="asker-positions1+2", about="the question, positions 1 and 2 in the loss",
                positions=(1, 2)),
        ASKER,
    ]


def default_setups() -> list[Setup]:
    """The asker's report, fixes one at a time, the N(0,1) variant, and the fix with one thing taken back."""
    return [
        *asker_setups(),
        replace(ASKER, name="asker+inverted", about="the question + inverted inputs (1 - pixel/255)",
                inputs="inverted"),
        replace(ASKER, name="asker+pool", about="the question + 4x pooled input", pool=4),
        replace(ASKER, name="asker+inverted+pool", about="the question + inverted, 4x pooled input",
                inputs="inverted", pool=4),
        replace(ASKER, name="asker+inverted+pool+rate", about="the question + inverted, 4x pooled input, Adam 1e-3",
                inputs="inverted", pool=4, learning_rate=1e-3),
        NORMAL,
        replace(NORMAL, name="normal-position1", about="N(0,1) variant, only position 1 in the loss",
                positions=(1,)),
        replace(NORMAL, name="normal-mse", about="N(0,1) variant with MSE on the one-hot vector", loss="mse"),
        replace(NORMAL, name="normal+inverted", about="N(0,1) variant + inverted inputs", inputs="inverted"),
        replace(NORMAL, name="normal+mean", about="N(0,1) variant + mean instead of summed loss", loss="mean"),
        replace(NORMAL, name="normal+he", about="N(0,1) variant + He initialisation", init="he"),
        FIX,
        replace(FIX, name="fix-inverted", about="fix, inputs /255 (dark text on light)", inputs="scaled"),
        replace(FIX, name="fix-scaling", about="fix, raw 0..255 inputs", inputs="raw"),
        replace(FIX, name="fix-he", about="fix, N(0,1) initialisation", init="normal"),
        replace(FIX, name="fix-pool", about="fix, full resolution", pool=1),
        replace(FIX, name="fix-sgd", about="fix, plain SGD (lr 0.5), mean loss", optimizer="sgd",
                learning_rate=0.5),
        replace(FIX, name="fix-sgd-sum", about="fix, plain SGD (lr 0.5), summed loss", optimizer="sgd",
                learning_rate=0.5, loss="sum"),
        replace(FIX, name="fix+sum", about="fix with the summed loss (Adam)", loss="sum"),
        replace(FIX, name="fix+batchnorm", about="fix + batch normalization", batch_norm=True),
        replace(FIX, name="fix+batchnorm-inverted", about="fix + batch normalization, inputs /255",
                batch_norm=True, inputs="scaled"),
    ]


@dataclass(frozen=True)
class DiagnoseConfig:
    limit: int = 10000  # images used (train + validation)
    val_fraction: float = 1 / 6
    epochs: int = 8
    batch_size: int = 64
    hidden: tuple[int, ...] = (256, 256)
    seed: int = 0


@dataclass
class Outcome:
    setup: Setup
    history: list[list[float]]  # per epoch: accuracy per position on the validation images
    losses: list[float]  # per epoch: mean training loss
    init_activation_std: float  # first hidden layer's pre-activations on the first batch, at initialisation
    dead_units: float  # share of first-layer ReLUs that are zero on every validation image, at the end
    cpu_seconds: float
    # [step, share of first-layer ReLUs that fire on at least one validation image] at the probed steps
    alive: list[list[float]] = field(default_factory=list)
    steps_per_epoch: int = 0

    @property
    def final(self) -> list[float]:
        return self.history[-1] if self.history else []

    @property
    def trained(self) -> list[float]:
        """Final accuracy of the positions whose cross-entropy was in the loss."""
        used = self.setup.positions or range(1, len(self.final) + 1)
        return [self.final[p - 1] for p in used if p <= len(self.final)]

    @property
    def mean(self) -> float:
        return float(np.mean(self.final)) if self.final else 0.0

    def learned(self, chance: float) -> bool:
        return bool(self.trained) and min(self.trained) >= LEARNED * chance

    def at_chance(self, chance: float) -> bool:
        return not self.trained or float(np.mean(self.trained)) < AT_CHANCE * chance

    def alive_at(self, step: int) -> float | None:
        """Share of live first-layer ReLUs at the last probe at or before ``step``."""
        before = [share for at, share in self.alive if at <= step]
        return before[-1] if before else None


def diagnose(
    data: str | Path,
    limit: int = 10000,
    epochs: int = 8,
    plot: str | Path | None = "diagnose.png",
    only: tuple[str, ...] | list[str] = (),
    skip_bad: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the experiments on DATA; returns the measurements and the verdict (see module doc)."""
    config = DiagnoseConfig(limit=limit, epochs=epochs)
    if config.limit < 20 or config.epochs < 1:
        raise UsageError("diagnose needs --limit of at least 20 images and --epochs of at least 1")
    setups = _select(default_setups(), only)
    dataset = load_dataset(data, None, None, skip_bad)
    if len(dataset) < 20:
        raise UsageError(f"{data}: diagnose needs at least 20 labelled images, found {len(dataset)}")
    x, y = _arrays(dataset, config)
    chance = 1.0 / len(dataset.charset.symbols)
    outcomes = []
    for index, setup in enumerate(setups):
        if progress:
            progress(setup.name, index, len(setups))
        outcomes.append(run_setup(setup, x, y, dataset.charset.num_classes, config))
    result = report(outcomes, chance, config, str(data), len(x))
    if plot:
        result["plot"] = str(save_plot(outcomes, chance, Path(plot)))
    return result


def _select(setups: list[Setup], only: tuple[str, ...] | list[str]) -> list[Setup]:
    if not only:
        return setups
    names = {s.name for s in setups}
    unknown = [n for n in only if n not in names]
    if unknown:
        raise UsageError(f"unknown setup(s) {', '.join(unknown)}; choose from: {', '.join(sorted(names))}")
    return [s for s in setups if s.name in only]


def _arrays(dataset: Any, config: DiagnoseConfig) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(config.seed).permutation(len(dataset))[: config.limit]
    return dataset.pixels[order], dataset.charset.encode_batch([dataset.labels[i] for i in order],
                                                               dataset.max_length)


def prepare_inputs(pixels: np.ndarray, setup: Setup) -> np.ndarray:
    x = pixels.astype(np.float32)
    if setup.pool > 1:
        n, h, w = x.shape
        h, w = h - h % setup.pool, w - w % setup.pool
        x = x[:, :h, :w].reshape(n, h // setup.pool, setup.pool, w // setup.pool, setup.pool).mean(axis=(2, 4))
    x = x.reshape(len(x), -1)
    if setup.inputs not in ("scaled", "centred", "inverted"):  # "raw": 0..255
        return np.ascontiguousarray(x)
    unit = x / images.WHITE  # the models' own scale (images.scaled)
    return 1.0 - unit if setup.inputs == "inverted" else unit - 0.5 if setup.inputs == "centred" else unit


def _probe_steps(total: int, per_epoch: int) -> set[int]:
    """Where the share of live ReLUs is measured: densely at the start, where units die, then each epoch."""
    early = {0, 1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500}
    return {s for s in early if s <= total} | set(range(per_epoch, total + 1, per_epoch))


def run_setup(setup: Setup, pixels: np.ndarray, targets: np.ndarray, num_classes: int,
              config: DiagnoseConfig) -> Outcome:
    """Train one setup for ``config.epochs``; per-position validation accuracy after each."""
    import_quietly()
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(config.seed)
    x = prepare_inputs(pixels, setup)
    n_val = max(1, round(len(x) * config.val_fraction))
    x_fit, y_fit, x_val, y_val = x[n_val:], targets[n_val:], x[:n_val], targets[:n_val]
    slots = targets.shape[1]
    hidden = setup.hidden or config.hidden
    model, first_layer, first_relu = build_network(setup, x.shape[1], slots * num_classes, hidden)
    optimizer = keras.optimizers.Adam(setup.learning_rate) if setup.optimizer == "adam" \
        else keras.optimizers.SGD(setup.learning_rate)
    step = train_step(model, optimizer, setup, slots, num_classes)
    batch_size = setup.batch_size or config.batch_size
    init_std = float(np.std(np.asarray(first_layer(x_fit[:batch_size]))))
    batches = max(1, len(x_fit) // batch_size)
    probes = _probe_steps(batches * config.epochs, batches)

    def alive() -> float:
        return float(np.mean((np.asarray(first_relu(x_val, training=False)) > 0).any(axis=0)))

    started = time.process_time()
    history, losses, live, done = [], [], [[0, alive()]], 0
    rng = np.random.default_rng(config.seed)
    for _ in range(config.epochs):
        batch_losses = []
        for batch in np.array_split(rng.permutation(len(x_fit)), batches):
            batch_losses.append(float(step(tf.constant(x_fit[batch]), tf.constant(y_fit[batch]))))
            done += 1
            if done in probes:
                live.append([done, alive()])
        losses.append(float(np.mean(batch_losses)))
        logits = np.asarray(model(x_val, training=False)).reshape(len(x_val), slots, num_classes)
        history.append([float(v) for v in (logits.argmax(-1) == y_val).mean(axis=0)])
    return Outcome(setup, history, losses, init_std, 1.0 - live[-1][1], time.process_time() - started,
                   live, batches)


def _initializers(setup: Setup) -> tuple[Any, Any]:
    import keras

    if setup.init == "truncated":
        return keras.initializers.TruncatedNormal(stddev=setup.init_std), keras.initializers.Constant(0.1)
    if setup.init == "normal":
        return keras.initializers.RandomNormal(stddev=1.0), "zeros"
    return "he_normal", "zeros"


def build_network(setup: Setup, inputs: int, outputs: int, hidden: tuple[int, ...]) -> tuple[Any, Any, Any]:
    """The dense network, and views of its first layer's pre-activations and ReLU outputs."""
    import keras
    from keras import layers

    kernel, bias = _initializers(setup)
    image = keras.Input((inputs,))
    x, views = image, []
    for units in hidden:
        x = layers.Dense(units, kernel_initializer=kernel, bias_initializer=bias)(x)
        views.append(x)
        if setup.batch_norm:
            x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        views.append(x)
    outputs = layers.Dense(outputs, kernel_initializer=kernel, bias_initializer=bias)(x)
    return keras.Model(image, outputs), keras.Model(image, views[0]), keras.Model(image, views[1])


def train_step(model: Any, optimizer: Any, setup: Setup, slots: int, num_classes: int) -> Callable:
    import tensorflow as tf

    used = [p - 1 for p in setup.positions] or list(range(slots))

    @tf.function
    def step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = tf.gather(tf.reshape(model(x, training=True), (-1, slots, num_classes)), used, axis=1)
            onehot = tf.gather(tf.one_hot(y, num_classes), used, axis=1)
            if setup.loss == "mse":
                loss = tf.reduce_mean(tf.square(logits - onehot))
            else:
                ce = tf.nn.softmax_cross_entropy_with_logits(labels=onehot, logits=logits)
                loss = tf.reduce_sum(ce) if setup.loss == "sum" else tf.reduce_mean(ce)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


# --- verdict ----------------------------------------------------------------------------------

FACTORS = {  # fix-minus-X run -> what X is
    "fix-inverted": "input polarity (dark text on a light background: every input near 1)",
    "fix-scaling": "input scale (raw 0..255 pixels)",
    "fix-he": "initialisation (N(0,1) weights: huge pre-activations, saturated softmax)",
    "fix-pool": "input resolution (full-size flattened image: too many weights for the data)",
    "fix-sgd": "the optimizer (plain SGD instead of Adam)",
}


def report(outcomes: list[Outcome], chance: float, config: DiagnoseConfig, data: str, images: int) -> dict:
    runs = {o.setup.name: o for o in outcomes}
    return {
        "data": data, "images": images, "chance": chance,
        "learned_threshold": LEARNED * chance, "config": asdict(config),
        "runs": [{"setup": asdict(o.setup), "per_position": o.final, "mean": o.mean, "history": o.history,
                  "losses": o.losses, "learned": o.learned(chance), "at_chance": o.at_chance(chance),
                  "init_activation_std": o.init_activation_std, "dead_units": o.dead_units,
                  "cpu_seconds": round(o.cpu_seconds, 1), "alive": o.alive, "steps_per_epoch": o.steps_per_epoch}
                 for o in outcomes],
        "verdict": verdict(runs, chance),
    }


def verdict(runs: dict[str, Outcome], chance: float) -> list[str]:
    """Sentences that follow from the measurements; nothing is claimed that was not run."""
    lines = _report_lines(runs, chance) + _asker_fix_lines(runs, chance)
    normal, fix = runs.get("normal"), runs.get("fix")
    if normal:
        state = "stays at chance" if normal.at_chance(chance) else "learns"
        lines.append(f"N(0,1) variant: raw pixels with N(0,1) weights {state} (mean accuracy {normal.mean:.3f}).")
    lines += _question_lines(runs, chance)
    if fix:
        lines += _cause_lines(runs, fix, chance)
    return lines


def _times(value: float, chance: float) -> str:
    return f"{value:.3f}, {value / chance:.1f}x chance"


def _report_lines(runs: dict[str, Outcome], chance: float) -> list[str]:
    """The asker's two observations, and how many first-layer ReLUs each loss leaves alive."""
    one, full = runs.get("asker-position1"), runs.get("asker")
    if not (one and full):
        return []
    first, rest = one.trained[0], float(np.mean(full.trained))
    shown = first >= LEARNED * chance and full.at_chance(chance)
    lines = [f"{'Reproduced' if shown else 'Not reproduced'}: with only position 1 in the loss it "
             f"{'learns' if first >= LEARNED * chance else 'does not learn'} ({_times(first, chance)}); with all "
             f"{len(full.trained)} positions summed it {'stays at chance' if full.at_chance(chance) else 'learns'} "
             f"(mean {_times(rest, chance)}; position 1 {_times(full.trained[0], chance)})."]
    two, both = runs.get("asker-position2"), runs.get("asker-positions1+2")
    if two:
        lines.append(f"Position 2 alone: {_times(two.trained[0], chance)}.")
    if both:
        lines.append(f"Positions 1 and 2 together: position 1 {_times(both.trained[0], chance)}, position 2 "
                     f"{_times(both.trained[1], chance)}.")
    heads = [(len(o.trained), o) for o in (one, both, full) if o and o.alive]
    if heads:
        lines.append("First-layer ReLUs alive at the end: " + ", ".join(
            f"{n} head{'s' if n > 1 else ''} {o.alive[-1][1]:.0%}" for n, o in heads) + ".")
    return lines


def _asker_fix_lines(runs: dict[str, Outcome], chance: float) -> list[str]:
    lines = []
    for name, what in (("asker+inverted", "inverted inputs"), ("asker+pool", "a 4x pooled input"),
                       ("asker+inverted+pool", "inverted, 4x pooled inputs"),
                       ("asker+inverted+pool+rate", "inverted, 4x pooled inputs and Adam at 1e-3")):
        if name in runs:
            outcome = runs[name]
            result = "learns every position" if outcome.learned(chance) else (
                "stays at chance" if outcome.at_chance(chance) else "learns some positions")
            lines.append(f"The asker's network with {what} {result} (per position {_fmt(outcome.final)}).")
    return lines


def _question_lines(runs: dict[str, Outcome], chance: float) -> list[str]:
    lines = []
    single, normal = runs.get("normal-position1"), runs.get("normal")
    if single and normal and single.final[0] < LEARNED * chance:
        lines.append(f"In the N(0,1) variant even position 1 alone stays at chance ({single.final[0]:.3f}): "
                     "there the initialisation, not the summed loss, stops it.")
    mse = runs.get("normal-mse")
    if mse:
        lines.append(f"MSE on the one-hot vector: mean accuracy {mse.mean:.3f} "
                     f"({'learns' if mse.learned(chance) else 'does not learn'} in this budget).")
    for name, what in (("normal+inverted", "inverting the inputs"), ("normal+mean", "averaging the loss"),
                       ("normal+he", "He initialisation")):
        if name in runs:
            outcome = runs[name]
            result = "is enough on its own" if outcome.learned(chance) else "is not enough on its own"
            lines.append(f"Of the N(0,1) variant, {what} {result} (mean {outcome.mean:.3f}).")
    adam_sum, fix = runs.get("fix+sum"), runs.get("fix")
    if adam_sum and fix:
        lines.append(f"With Adam, which scales each step by the gradient's size, the summed loss learns like the "
                     f"mean one (mean accuracy {adam_sum.mean:.3f} vs {fix.mean:.3f}).")
    bn, bn_scaled, scaled = runs.get("fix+batchnorm"), runs.get("fix+batchnorm-inverted"), runs.get("fix-inverted")
    if bn:
        lines.append(f"Batch normalization on top of the fix: mean {bn.mean:.3f} (fix without it: "
                     f"{runs['fix'].mean:.3f})." if "fix" in runs else f"Fix + batch normalization: {bn.mean:.3f}.")
    if bn_scaled and scaled and bn_scaled.learned(chance) and not scaled.learned(chance):
        lines.append(f"Batch normalization re-centres every unit, so it also rescues non-inverted inputs "
                     f"({bn_scaled.mean:.3f} vs {scaled.mean:.3f} without it).")
    sgd, sgd_sum = runs.get("fix-sgd"), runs.get("fix-sgd-sum")
    if sgd and sgd_sum:
        if sgd_sum.at_chance(chance) and not sgd.at_chance(chance):
            lines.append(f"Learning rate vs summed loss: with plain SGD the summed loss (x batch x positions) "
                         f"fails (mean {sgd_sum.mean:.3f}) where the mean loss learns ({sgd.mean:.3f}).")
        else:
            lines.append(f"Plain SGD: mean loss {sgd.mean:.3f}, summed loss {sgd_sum.mean:.3f}.")
    return lines


def _cause_lines(runs: dict[str, Outcome], fix: Outcome, chance: float) -> list[str]:
    if not fix.learned(chance):
        return [f"The fix did not learn every position in this budget (per position "
                f"{_fmt(fix.final)}); use more images (--limit) or epochs (--epochs)."]
    lines = [f"Fix that worked: {fix.setup.about}; per position {_fmt(fix.final)} "
             f"(chance {chance:.3f})."]
    taken_back = sorted(((fix.mean - runs[name].mean, name) for name in FACTORS if name in runs), reverse=True)
    causes = [(drop, name) for drop, name in taken_back if runs[name].at_chance(chance)]
    for drop, name in causes:
        lines.append(f"Cause: {FACTORS[name]}: taking it back from the fix puts accuracy back at chance "
                     f"(mean {runs[name].mean:.3f}, {drop:.3f} lower).")
    for drop, name in taken_back:
        outcome = runs[name]
        if not outcome.at_chance(chance) and not outcome.learned(chance):
            lines.append(f"Slows learning: {FACTORS[name]}: without it the fix learns less in this budget "
                         f"(mean {outcome.mean:.3f}, {drop:.3f} lower; weakest position {min(outcome.final):.3f}).")
    harmless = [name for _, name in taken_back if runs[name].learned(chance)]
    if harmless:
        lines.append("Not needed in this budget (still learns every position without it): "
                     + "; ".join(FACTORS[n].split(" (")[0] for n in harmless) + ".")
    if not causes:
        lines.append("No single factor puts the fix back at chance on its own: it needs several of them together.")
    return lines


def _fmt(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def save_plot(outcomes: list[Outcome], chance: float, path: Path) -> Path:
    """One panel per setup: per-position validation accuracy over the epochs, chance dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(4, max(1, len(outcomes)))  # fewer setups (--only): no empty panels
    rows = (len(outcomes) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.8 * rows), squeeze=False, sharey=True)
    top = max([LEARNED * chance * 2, *(max(o.final or [0]) for o in outcomes)]) * 1.05
    for ax, outcome in zip(axes.flat, outcomes):
        _panel(ax, outcome, chance, top)
    for ax in list(axes.flat)[len(outcomes):]:
        ax.axis("off")
    axes[0][0].set_ylabel("validation accuracy")
    axes[0][0].legend(fontsize=7)
    figure.suptitle("captchalab diagnose: per-position accuracy (dashed: chance; dotted, right axis: share of "
                    "first-layer ReLUs alive)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def _panel(ax: Any, outcome: Outcome, chance: float, top: float) -> None:
    """Accuracy of each position in the loss over training steps, and the live ReLUs on a second axis."""
    history = np.array(outcome.history)
    per_epoch = outcome.steps_per_epoch or 1
    steps = np.arange(1, len(history) + 1) * per_epoch
    used = outcome.setup.positions or range(1, (history.shape[1] if history.size else 0) + 1)
    for position in used:
        ax.plot(steps, history[:, position - 1], marker=".", label=f"pos {position}")
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1)
    ax.set_title(outcome.setup.name, fontsize=10)
    ax.set_ylim(0, top)
    ax.set_xlabel("step" if outcome.steps_per_epoch else "epoch")
    if outcome.alive:
        live = np.array(outcome.alive)
        twin = ax.twinx()
        twin.plot(live[:, 0], live[:, 1], color="black", linestyle=":", linewidth=1)
        twin.set_ylim(0, 1.05)
        twin.tick_params(labelsize=7)
