"""Every model learns to read: trained on a trivially easy generated set (tests/conftest.py:
EasySampler), it must read unseen images of it, through the run folder's ONNX model as a user
would. The reading is compared with the true label, so a model, loss, decoder or export that
reads wrong fails here. Each trains for tens of seconds of CPU: `make test-large`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from captchalab.evaluation import evaluate
from captchalab.models import registry

# Epochs for the 320 images (each model read 40 of 40 held-out images at these when written).
EPOCHS = {"mlp": 6, "cnn": 6, "segment": 6, "crnn": 12}


def test_every_model_has_a_learning_test():
    assert sorted(EPOCHS) == sorted(registry.names())


@pytest.mark.large
@pytest.mark.parametrize("name", sorted(EPOCHS))
def test_model_reads_unseen_easy_captchas(name: str, easy_sets: tuple[Path, Path], tmp_path: Path):
    from captchalab.training import train

    train_set, held_out = easy_sets
    run = train(train_set, model=name, out=tmp_path / name, epochs=EPOCHS[name], quiet=True)
    result = evaluate(run / "model.onnx", held_out, save=False)
    assert result["n"] == 40
    assert result["sequence_accuracy"] >= 0.95 and result["char_accuracy"] >= 0.98, result
    own = json.loads((run / "metrics.json").read_text())["training_images"]
    assert own["n"] == 288 and own["sequence_accuracy"] >= 0.95, own  # 320 less the 10% held out for validation
