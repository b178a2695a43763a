"""train --init: fine-tuning from a pretrained run, also to another charset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from captchalab import runs
from captchalab.charset import Charset
from captchalab.data.synthetic import generate
from captchalab.errors import UsageError
from captchalab.transfer import class_map, transfer_weights
from clirun import run_cli


def test_class_map_matches_symbols() -> None:
    assert class_map(Charset("ABC"), Charset("CAX")) == [0, 3, 1, None]


def test_weights_are_copied_and_shared_symbols_keep_their_output_weights(tiny_run: Path) -> None:
    from dataclasses import replace

    from captchalab.models.build import build_model
    from captchalab.runs import load_keras

    source_config = runs.read_config(tiny_run)  # charset 0-9A-F
    config = replace(source_config, charset=Charset("9AZ"))
    model = build_model(config)
    report = transfer_weights(model, config, tiny_run)
    assert report["layers_reinitialized"] == [] and report["output_classes"] == {"copied": 3, "new": 1}
    source = load_keras(tiny_run, source_config)
    kernel, bias = model.get_layer("logits").get_weights()
    src_kernel, src_bias = source.get_layer("logits").get_weights()
    for target, symbol in ((0, None), (1, "9"), (2, "A")):
        column = 0 if symbol is None else source_config.charset.symbols.index(symbol) + 1
        np.testing.assert_array_equal(kernel[:, target], src_kernel[:, column])
        assert bias[target] == src_bias[column]
    first = next(layer for layer in model.layers if layer.weights)
    np.testing.assert_array_equal(first.get_weights()[0], next(la for la in source.layers if la.weights)
                                  .get_weights()[0])


def test_fine_tuning_to_another_charset_and_size(tiny_run: Path, tmp_path: Path) -> None:
    from captchalab.training import train

    data = generate(tmp_path / "other", 30, length="3", charset="A-K", size="120x40", seed=4)
    folder = train(data, out=tmp_path / "tuned", epochs=1, quiet=True, init=tiny_run, export_onnx=False)
    config = runs.read_config(folder)
    assert config.charset.symbols == "ABCDEFGHIJK" and config.image == runs.read_config(tiny_run).image
    state = json.loads((folder / "checkpoints" / "state.json").read_text())
    assert state["init_report"]["output_classes"] == {"copied": 7, "new": 5}  # blank and A-F; G-K are new
    assert (folder / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_a_wider_input_than_the_pretrained_run_is_read_from_the_images(tiny_run: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """--init reads images at the pretrained size; a larger --set image.* must not upsample that."""
    from captchalab import training
    from captchalab.data.folder import load_dataset
    from captchalab.data.images import ImageSize

    data = generate(tmp_path / "wide", 12, length="4", charset="0-9", size="192x32", seed=5)
    seen = {}

    def stop(config, train_set, val_set):
        seen["pixels"] = train_set.pixels
        raise RuntimeError("split reached")

    monkeypatch.setattr(training, "_split", stop)
    with pytest.raises(RuntimeError, match="split reached"):
        training.train(data, out=tmp_path / "wider", init=tiny_run, quiet=True, overrides=["image.width=192"])
    direct = load_dataset(data, Charset.parse("0-9"), ImageSize(32, 192)).pixels
    np.testing.assert_array_equal(seen["pixels"], direct)


def test_init_from_another_model_is_a_usage_error(tiny_run: Path, tiny_set: Path, tmp_path: Path) -> None:
    from captchalab.training import train

    with pytest.raises(UsageError, match="crnn"):
        train(tiny_set, model="cnn", out=tmp_path / "x", epochs=1, quiet=True, init=tiny_run)


def test_cli_init_missing_run_fails_cleanly(tiny_set: Path, tmp_path: Path) -> None:
    outcome = run_cli("train", tiny_set, "--init", tmp_path / "nowhere", "--out", tmp_path / "r", "-q")
    assert outcome.failed_cleanly(4, "nowhere")


def test_train_fine_tunes_the_shipped_general_reader_by_default(tmp_path: Path) -> None:
    """`train DATA` (--init auto) starts from the general reader: its network and 32x160 grey input,
    the data's charset; metrics.json says where the weights started."""
    data = generate(tmp_path / "digits", 30, length="4", charset="0-9", size="120x40", seed=5)
    outcome = run_cli("train", data, "--out", tmp_path / "tuned", "--epochs", "1", "--quiet")
    assert outcome.code == 0, outcome.text
    metrics = json.loads((tmp_path / "tuned" / "metrics.json").read_text())
    assert Path(metrics["init"]) == runs.general_reader_path().resolve()
    assert "fine-tuned from the general reader" in outcome.text
    config = runs.read_config(tmp_path / "tuned")
    general = runs.read_config(runs.general_reader_path())
    assert config.charset.symbols == "0123456789" and config.image == general.image
    assert config.options == general.options
    state = json.loads((tmp_path / "tuned" / "checkpoints" / "state.json").read_text())
    assert state["init_report"]["output_classes"] == {"copied": 11, "new": 0}  # blank and the ten digits


@pytest.mark.parametrize(("model", "overrides", "length", "expected"), [
    (None, [], "4-10", "general"),
    ("crnn", ["train.learning_rate=0.001"], "4", "general"),  # training settings keep the network
    ("cnn", [], "4", None),
    (None, ["model.rnn_units=32"], "4", None),
    (None, ["image.width=200"], "4", None),
    (None, ["image.channels=3"], "4", "general"),  # colour: the reader's first convolution is widened
    (None, ["options.rnn_units=32"], "4", None),  # the name behind the model.* alias
    (None, [], "11", None),  # longer than the general reader's 10 slots
])
def test_auto_init_picks_the_general_reader_only_where_it_can_be_the_network(
    tmp_path: Path, model: str | None, overrides: list[str], length: str, expected: str | None,
) -> None:
    from captchalab.training import _auto_init

    rows = [("a.png", "7" * int(n)) for n in length.split("-")]
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\n" + "".join(f"{f},{t}\n" for f, t in rows))
    assert _auto_init(labels, model, overrides) == expected


def test_init_none_trains_from_random_weights(tmp_path: Path) -> None:
    data = generate(tmp_path / "digits", 30, length="4", charset="0-9", size="120x40", seed=5)
    outcome = run_cli("train", data, "--out", tmp_path / "scratch", "--init", "none", "--epochs", "1", "--quiet")
    assert outcome.code == 0, outcome.text
    assert json.loads((tmp_path / "scratch" / "metrics.json").read_text())["init"] is None
    assert runs.read_config(tmp_path / "scratch").image != runs.read_config(runs.general_reader_path()).image


def test_a_grey_network_widened_to_colour_computes_what_it_computed_on_grey(tmp_path: Path) -> None:
    """transfer._widened: the colour network's first outputs on an RGB image equal the grey network's
    on that image's grey (images.LUMA weights), so fine-tuning for colour starts where grey left off."""
    import keras

    from captchalab.data.images import LUMA
    from captchalab.transfer import _widened

    def network(channels: int) -> keras.Model:
        inputs = keras.Input((8, 12, channels))
        return keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same")(inputs))

    grey, colour = network(1), network(3)
    colour.layers[1].set_weights(_widened(grey.layers[1].get_weights(), colour.layers[1].get_weights()))
    rgb = np.random.default_rng(0).random((2, 8, 12, 3)).astype(np.float32)
    luma = (rgb * np.asarray(LUMA, np.float32)).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(colour(rgb).numpy(), grey(luma).numpy(), atol=1e-5)
    assert _widened(grey.layers[1].get_weights(), grey.layers[1].get_weights()) is None  # nothing to widen


def test_colour_input_fine_tunes_the_general_reader_and_solves_rgb(tmp_path: Path) -> None:
    """--set image.channels=3: the general reader's weights, widened; RGB images in, the ONNX model
    takes three channels, and solve reads colour images through it."""
    import captchalab
    from captchalab.training import train

    data = generate(tmp_path / "digits", 24, length="4", charset="0-9", size="120x40", seed=6)
    folder = train(data, out=tmp_path / "colour", epochs=1, quiet=True, overrides=["image.channels=3"])
    config = runs.read_config(folder)
    assert config.image.channels == 3 and config.image.height == 32
    assert json.loads((folder / "config.json").read_text())["image"]["preprocessing"].startswith("RGB")
    state = json.loads((folder / "checkpoints" / "state.json").read_text())
    assert state["init_report"]["layers_widened_to_colour"] and not state["init_report"]["layers_reinitialized"]
    reader = captchalab.load(folder)
    image = next(iter(sorted(data.parent.glob("digits/*.png"))))
    assert reader.prepare(str(image)).shape == (32, 160, 3)
    assert len(reader.solve([str(image), str(image)])) == 2


def test_a_segment_model_refuses_colour(tiny_set: Path, tmp_path: Path) -> None:
    from captchalab.training import train

    with pytest.raises(UsageError, match="grey images only"):
        train(tiny_set, model="segment", out=tmp_path / "s", epochs=1, quiet=True, overrides=["image.channels=3"])
