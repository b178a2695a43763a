import json

import pytest

from captchalab.errors import RunFolderError, UsageError
from captchalab.train import train


def test_run_folder_has_the_design_files(tiny_run):
    for name in ("model.keras", "model.onnx", "config.json", "history.json", "metrics.json"):
        assert (tiny_run / name).exists()
    history = json.loads((tiny_run / "history.json").read_text())
    assert history[0]["epoch"] == 1 and "val_sequence_accuracy" in history[0]
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["model"] == "crnn" and config["head"] == "ctc"
    assert config["image"] == {"height": 32, "width": 96, "channels": 1,
                               "preprocessing": config["image"]["preprocessing"]}


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
    run = train(tiny_set, out=tmp_path / "r", epochs=1, quiet=True, export_onnx=False,
                overrides=["train.patience=50"])
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 1
    train(tiny_set, resume=run, epochs=2, quiet=True, export_onnx=False)
    assert len(json.loads((run / "history.json").read_text())) == 2
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 2
    history = json.loads((run / "history.json").read_text())
    spent = json.loads((run / "metrics.json").read_text())["train_cpu_seconds"]
    assert spent >= sum(h["cpu_seconds"] for h in history) - 0.2  # both processes' CPU time counted


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

    from captchalab.train import refresh_batch_norm

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

    from captchalab.train import refresh_batch_norm

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
