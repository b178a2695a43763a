import io
import itertools
import json
import zipfile

import h5py
import pytest

from captchalab.errors import RunFolderError, UsageError
from captchalab.training import train


def test_run_folder_has_the_design_files(tiny_run):
    for name in ("model.keras", "model.onnx", "config.json", "history.json", "metrics.json"):
        assert (tiny_run / name).exists()
    history = json.loads((tiny_run / "history.json").read_text())
    assert history[0]["epoch"] == 1 and "val_sequence_accuracy" in history[0]
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["model"] == "crnn" and config["head"] == "ctc"
    assert config["image"] == {"height": 32, "width": 96, "channels": 1,
                               "preprocessing": config["image"]["preprocessing"]}


def test_model_keras_holds_weights_without_the_optimizer_state(tiny_set, tmp_path):
    """Without a training-only head the trained network is the compiled one: its optimizer state
    (twice the weights) must not be saved into model.keras, which is read for its weights alone."""
    run = train(tiny_set, out=tmp_path / "run", epochs=1, quiet=True, overrides=["model.alignment_weight=0"])
    with zipfile.ZipFile(run / "model.keras") as archive:
        weights = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
        assert "layers" in weights and "optimizer" not in weights


def test_existing_run_is_not_overwritten(tiny_set, tiny_run):
    before = (tiny_run / "model.keras").read_bytes()
    with pytest.raises(RunFolderError, match="--force"):
        train(tiny_set, out=tiny_run, epochs=1, quiet=True)
    assert (tiny_run / "model.keras").read_bytes() == before


def test_overrides_are_validated(tiny_set, tmp_path):
    with pytest.raises(UsageError, match="unknown setting"):
        train(tiny_set, out=tmp_path / "r", overrides=["train.nope=1"], quiet=True)
    with pytest.raises(UsageError, match="expected a int"):
        train(tiny_set, out=tmp_path / "r", overrides=["train.epochs=many"], quiet=True)


def test_resume_continues_to_the_requested_epochs(tiny_set, tmp_path):
    from captchalab.config import TrainConfig

    # typed settings, with the command line's key=value overrides on top
    run = train(tiny_set, out=tmp_path / "r", epochs=1, quiet=True, export_onnx=False,
                train_config=TrainConfig(patience=50, seed=3, batch_size=4), overrides=["train.batch_size=8"])
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 1
    settings = json.loads((run / "config.json").read_text())["train"]
    assert (settings["patience"], settings["seed"], settings["batch_size"], settings["epochs"]) == (50, 3, 8, 1)
    train(tiny_set, resume=run, epochs=2, quiet=True, export_onnx=False)
    assert len(json.loads((run / "history.json").read_text())) == 2
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 2
    history = json.loads((run / "history.json").read_text())
    spent = json.loads((run / "metrics.json").read_text())["train_cpu_seconds"]
    assert spent >= sum(h["cpu_seconds"] for h in history) - 0.2  # both processes' CPU time counted


@pytest.mark.large  # make test under 10 minutes; resume and skip-bad keep faster tests
def test_resume_with_fewer_epochs_finishes_from_the_best_checkpoint(tiny_set, tmp_path):
    run = train(tiny_set, out=tmp_path / "r", epochs=2, quiet=True, export_onnx=False,
                overrides=["train.patience=50"])
    (run / "model.keras").unlink()  # as if killed after its second epoch
    train(tiny_set, resume=run, epochs=1, quiet=True, export_onnx=False)
    assert (run / "model.keras").exists() and len(json.loads((run / "history.json").read_text())) == 2
    with pytest.raises(UsageError, match="at least 1"):
        train(tiny_set, resume=run, epochs=0, quiet=True, export_onnx=False)


def test_refresh_batch_norm_sets_the_statistics_of_the_given_images():
    import keras
    import numpy as np

    from captchalab.training import refresh_batch_norm

    inputs = keras.Input((8, 8, 1))
    conv = keras.layers.Conv2D(3, 3, padding="same")
    norm = keras.layers.BatchNormalization()
    model = keras.Model(inputs, norm(conv(inputs)))
    pixels = np.random.default_rng(0).integers(0, 256, (200, 8, 8), dtype=np.uint8)

    refresh_batch_norm(model, pixels, images=192, batch_size=64)

    features = np.asarray(conv(pixels[:192].astype(np.float32)[..., None] / 255.0))
    np.testing.assert_allclose(np.asarray(norm.moving_mean), features.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    batch_variances = [features[i : i + 64].var(axis=(0, 1, 2)) for i in range(0, 192, 64)]
    np.testing.assert_allclose(np.asarray(norm.moving_variance), np.mean(batch_variances, axis=0), rtol=1e-3)
    assert norm.momentum == 0.99


def test_refresh_batch_norm_sees_the_features_without_dropout():
    """A BatchNormalization after a Dropout must get the statistics it meets at inference."""
    import keras
    import numpy as np

    from captchalab.training import refresh_batch_norm

    inputs = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()
    drop = keras.layers.Dropout(0.8)
    norm = keras.layers.BatchNormalization()
    model = keras.Model(inputs, norm(drop(flat(inputs))))
    pixels = np.random.default_rng(0).integers(0, 256, (128, 8, 8), dtype=np.uint8)

    refresh_batch_norm(model, pixels, images=128, batch_size=128)

    features = pixels.reshape(128, -1).astype(np.float32) / 255.0
    np.testing.assert_allclose(np.asarray(norm.moving_variance), features.var(axis=0), rtol=1e-3)
    assert drop.rate == 0.8


def test_the_epoch_budget_grows_with_fewer_images_and_has_a_floor():
    from captchalab.training import MAX_EPOCHS, MIN_EPOCHS, auto_epochs

    small, medium, large = (auto_epochs(n, 16, 2500) for n in (450, 1080, 3600))
    assert small > medium >= large == MIN_EPOCHS
    assert small * 29 >= 2500 and medium * 68 >= 2500  # every set gets its minimum of steps
    assert auto_epochs(5, 16, 2500) == MAX_EPOCHS


def test_a_slow_model_gets_its_own_floor_of_epochs():
    from captchalab.models import registry
    from captchalab.training import MIN_EPOCHS, auto_epochs

    least = registry.get("mlp").least_epochs
    assert least > MIN_EPOCHS and registry.get("crnn").least_epochs <= MIN_EPOCHS
    assert auto_epochs(50_000, 16, 2500, least) == least > auto_epochs(50_000, 16, 2500)


def test_an_automatic_budget_is_written_to_the_run_config(tiny_set, tmp_path):
    from captchalab.training import auto_epochs

    run = train(tiny_set, out=tmp_path / "r", quiet=True, export_onnx=False,
                overrides=["train.min_steps=1000", "train.batch_size=1", "train.max_cpu_minutes=0.0001"])
    epochs = json.loads((run / "config.json").read_text())["train"]["epochs"]
    assert epochs == auto_epochs(36, 1, 1000) == 28  # 40 images less the 4 held out (one epoch run)


def test_the_mlp_run_is_given_its_floor_of_epochs(tiny_set, tmp_path):
    from captchalab.models import registry

    run = train(tiny_set, model="mlp", init=None, out=tmp_path / "m", quiet=True, export_onnx=False,
                overrides=["train.min_steps=10", "train.max_cpu_minutes=0.0001"])
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == registry.get("mlp").least_epochs


def test_the_cosine_schedule_falls_from_the_rate_to_its_floor():
    from captchalab.config import TrainConfig
    from captchalab.training import FINAL_RATE, learning_rate_at

    config = TrainConfig(epochs=10, learning_rate=1e-3)
    rates = [learning_rate_at(config, e / 10) for e in range(11)]
    assert rates[0] == pytest.approx(1e-3) and rates[10] == pytest.approx(FINAL_RATE * 1e-3)
    assert all(a > b for a, b in itertools.pairwise(rates))


def test_an_unknown_schedule_is_refused(tiny_set, tmp_path):
    with pytest.raises(UsageError, match=r"train\.schedule"):
        train(tiny_set, out=tmp_path / "r", quiet=True, overrides=["train.schedule=step"])


def test_validation_loss_is_the_inference_heads_alone(tmp_path):
    """crnn trains a per-slot head beside CTC; val_loss must not include it (it can overfit while
    CTC still improves, and then early stopping ends a run that is learning)."""
    import keras
    import numpy as np

    from captchalab.charset import Charset
    from captchalab.config import RunConfig, TrainConfig
    from captchalab.data.images import ImageSize
    from captchalab.models import registry
    from captchalab.models.build import build_model, training_model
    from captchalab.models.losses import ctc_loss
    from captchalab.training import EpochEnd, Split, TrainingState

    charset = Charset.parse("0-9")
    config = RunConfig("crnn", "ctc", charset, ImageSize(32, 64), 4, registry.get("crnn").options_type(),
                       TrainConfig(epochs=1))
    model = build_model(config)
    trainer = training_model(model, config)
    trainer.compile(loss=["mse", "mse"])
    labels = ("1234", "567", "0000", "98")
    pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 64), dtype=np.uint8)
    targets = charset.encode_batch(labels, 4)
    state = TrainingState(data="d", epoch=0, history=[], learning_rate=1e-3)
    callback = EpochEnd(config, tmp_path, Split(pixels, targets, pixels, labels, targets), state, model)
    callback.set_model(trainer)

    _, loss = callback._validate()

    logits = model.predict(pixels.astype(np.float32)[..., None] / 255.0, verbose=0)
    assert loss == pytest.approx(float(np.mean(keras.ops.convert_to_numpy(ctc_loss(targets, logits)))), rel=1e-5)


def test_patience_does_not_run_out_on_the_start_up_plateau(stopping_rule):
    """Sequence accuracy 0, CER 1 and a loss creeping down by less than 1% an epoch: the
    model has read nothing yet, but it may still leave the plateau; only the budget ends it."""
    from captchalab.config import TrainConfig

    callback, model = stopping_rule(TrainConfig(patience=3))
    for epoch in range(1, 12):
        callback._track_best({"epoch": epoch, "val_sequence_accuracy": 0.0, "val_cer": 1.0,
                              "val_loss": 30.0 - 0.05 * epoch})
        assert not model.stop_training
    for epoch in range(12, 20):  # then it reads some characters, and stops improving
        callback._track_best({"epoch": epoch, "val_sequence_accuracy": 0.1, "val_cer": 0.5, "val_loss": 10.0})
        if model.stop_training:
            break
    assert epoch == 12 + 3


def test_a_run_saved_before_the_schedule_setting_resumes_with_its_rules(tiny_run, tmp_path):
    from captchalab import runs
    from captchalab.training import TrainingState, _rescore_best

    data = json.loads((tiny_run / "config.json").read_text())
    del data["train"]["schedule"]
    (tmp_path / "config.json").write_text(json.dumps(data))
    assert runs.read_config(tmp_path).train.schedule == "plateau"
    history = [{"epoch": 1, "val_sequence_accuracy": 0.5, "val_cer": 0.2, "val_loss": 3.0},
               {"epoch": 2, "val_sequence_accuracy": 0.5, "val_cer": 0.1, "val_loss": 4.0}]
    state = TrainingState(data="d", epoch=2, history=history, learning_rate=1e-3, best=[0.5, -3.0])  # [acc, -loss]
    _rescore_best(state)
    assert state.best == [0.5, -0.1, -4.0]


@pytest.mark.large  # make test under 10 minutes; resume and skip-bad keep faster tests
def test_a_state_json_written_while_the_state_was_a_dict_still_resumes(tiny_run, tmp_path):
    """checkpoints/state.json as train.py wrote it before TrainingState (keys absent until set, a
    time limit's stopped_by) reads into the typed state, writes back the same values, and resumes."""
    import shutil
    from pathlib import Path

    from captchalab.training import TrainingState, _read_state

    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    state_file = run / "checkpoints" / "state.json"
    written = json.loads(state_file.read_text())
    old = {"data": written["data"], "val": None, "epoch": 1, "history": written["history"], "best": written["best"],
           "wait": 0, "learning_rate": written["learning_rate"], "skipped": [], "init": None, "cpu_seconds": 2.5,
           "bests": written["bests"], "perfect": 0, "stopped": True, "stopped_by": "train.max_minutes=0.01"}
    state_file.write_text(json.dumps(old))
    state = _read_state(run)
    assert isinstance(state, TrainingState) and state.stopped_by == "train.max_minutes=0.01"
    assert {key: state.model_dump()[key] for key in old} == old
    state.save(run)
    assert _read_state(run) == state  # round trip through the file
    train(run, resume=run, epochs=2, quiet=True, export_onnx=False)  # a larger limit: go on
    resumed = json.loads(state_file.read_text())
    assert resumed["epoch"] == 2 and len(resumed["history"]) == 2 and resumed["stopped_by"] is None
    assert resumed["cpu_seconds"] > 2.5 and resumed["history"][0] == old["history"][0]
    assert "stopped_by" not in json.loads((run / "metrics.json").read_text())


def test_the_fit_on_training_images_is_scored_like_validation(tiny_set, tmp_path):
    """Validated on its own training images, a run must score them the same twice: the labels read
    back for the training images (metrics.json training_images) are the true ones."""
    run = train(tiny_set, val=tiny_set, out=tmp_path / "run", epochs=1, quiet=True, export_onnx=False)
    metrics = json.loads((run / "metrics.json").read_text())
    fit = metrics["training_images"]
    assert fit["n"] == metrics["n"] == 40
    assert 0.0 < fit["cer"] < 1.0  # the fine-tuned general reader reads some characters: the check can fail
    for key in ("sequence_accuracy", "char_accuracy", "cer"):  # the same images in another order
        assert fit[key] == pytest.approx(metrics[key], abs=1e-9), key
