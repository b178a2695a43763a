"""One predictor for ``solve``, ``serve`` and the Python API.

ONNX Runtime by default; Keras (which imports TensorFlow) only as a fallback for a run
folder that has no ``model.onnx``. Pre-processing and decoding are the same for both.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, overload

import numpy as np
from PIL import Image

from captchalab import calibration, decoding, files, heads, ood, runs
from captchalab.config import RunConfig, from_dict
from captchalab.data import images
from captchalab.decoding import Constraints, Prediction
from captchalab.errors import ModelError, UsageError
from captchalab.inference import onnxfile
from captchalab.runs import METADATA_KEY, load_keras

URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")  # a scheme (two letters at least: C:/ is a Windows drive)
ImageLike = str | Path | bytes | Image.Image | np.ndarray
BATCH_SIZE = 64  # images per network call: predict_pixels splits larger inputs


def bundled_model_path() -> Path:
    return Path(str(resources.files("captchalab") / "bundled" / "model.onnx"))


@dataclass
class _Backend:
    run: Any  # (float32 batch) -> logits


class Predictor:
    """Images in, readings out. ``Predictor.load(RUN)`` or ``captchalab.load(RUN)``."""

    def __init__(self, config: RunConfig, backend: _Backend, source: Path, backend_name: str) -> None:
        self.config, self._backend, self.source, self.backend = config, backend, source, backend_name
        self.temperature = 1.0  # confidence calibration (calibration.py); logits are divided by it
        self.ood_reference: dict[str, Any] | None = None  # validation images' scores (ood.py); None: no flag

    @classmethod
    def load(cls, model: str | Path | None = None, backend: str = "auto", threads: int = 0,
             device: str = "cpu") -> Predictor:
        """``model``: a run folder, an ``.onnx`` file, "general" for the shipped general reader (docs/world.md),
        or None for the bundled model; ``device="cuda"``
        runs ONNX Runtime's CUDA provider where it is installed (onnxruntime-gpu), else the CPU with a warning."""
        if backend not in ("auto", "onnx", "keras"):
            raise UsageError(f"backend '{backend}' is not one of auto, onnx, keras")
        if model is not None and URL.match(str(model)):  # Path() has already turned "https://" into "https:/"
            address = re.sub(r":/+", "://", str(model), count=1)
            raise UsageError(f"{address}: is an address, not a file; captchalab never loads a model over the network. "
                             "Download it, then pass the .onnx file or the run folder")
        path = runs.named_run(model) if model is not None else bundled_model_path()
        if path.suffix == ".onnx" and path.exists() and not path.is_dir():  # read_model refuses pipes and devices
            return cls._from_onnx(path, threads, device)
        folder = runs.run_folder(path)
        if (folder / "model.onnx").exists() and backend != "keras":
            return cls._from_onnx(folder / "model.onnx", threads, device)
        if backend == "onnx":
            raise ModelError(f"{folder}: has no model.onnx; run 'captchalab export {folder} --format onnx'")
        return cls._from_keras(folder, threads)

    @classmethod
    def _from_onnx(cls, path: Path, threads: int, device: str = "cpu") -> Predictor:
        import onnxruntime as ort

        try:
            data, external = onnxfile.read_model(path)
        except FileNotFoundError:
            raise ModelError(f"{path}: no such file; check the path") from None
        except OSError as error:
            raise ModelError(f"{path}: cannot be read ({error.strerror}); check the file") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            # From the bytes read above: no second open of a path that may have changed. A model with
            # (checked) external data needs its path, where ONNX Runtime looks for those files.
            model = str(path) if external else data
            session = ort.InferenceSession(model, options, providers=onnx_providers(device))
        except Exception as error:  # ORT raises its own exception types for damaged files
            raise ModelError(f"{path}: not a loadable ONNX model ({type(error).__name__}); re-export it") from None
        raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise ModelError(f"{path}: has no captchalab metadata; export it with 'captchalab export'")
        fix = "re-export it"
        config = from_dict(files.parse_json(raw, f"{path} (captchalab metadata)", ModelError, fix), path, None)
        _check_graph(session, config, path)
        input_name = session.get_inputs()[0].name
        backend = _Backend(lambda batch: session.run(None, {input_name: batch})[0])
        predictor = cls(config, backend, path, "onnx")
        predictor.temperature = _onnx_temperature(session, path)
        predictor.ood_reference = _onnx_ood_reference(session, path)
        return predictor

    @classmethod
    def _from_keras(cls, folder: Path, threads: int) -> Predictor:
        if threads:
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(threads)
        config = runs.read_config(folder)
        model = load_keras(folder, config)
        predictor = cls(config, _Backend(lambda batch: np.asarray(model(batch, training=False))), folder, "keras")
        predictor.temperature = calibration.read(folder)
        predictor.ood_reference = ood.read(folder)
        return predictor

    @property
    def name(self) -> str:
        return self.config.model

    def prepare(self, image: ImageLike, name: str | None = None) -> np.ndarray:
        """Any accepted image to uint8 (h, w), or (h, w, 3) for a colour model, at the model's size."""
        if isinstance(image, np.ndarray):
            image = Image.fromarray(_as_uint8(image))
        if isinstance(image, Image.Image):
            return images.prepare(image, self.config.image)
        return images.load(image, self.config.image, name)

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        pixels = self.config.head.prepare(pixels, self.config.max_length)  # as in training
        return np.asarray(self._backend.run(images.to_model_input(pixels)), dtype=np.float32)

    def predict_pixels(
        self, pixels: np.ndarray, top_k: int = 1, constraints: Constraints | None = None,
        min_confidence: float | None = None, batch_size: int = BATCH_SIZE,
        progress: Callable[[int], None] | None = None,
    ) -> list[list[Prediction]]:
        """Best readings per image with calibrated confidences; ``constraints`` restrict the search,
        each reading says whether its image is ``ood`` (ood.py), and a best reading below
        ``min_confidence`` or of an ood image is marked ``abstained``.

        The one batching path: ``batch_size`` images go through the network at a time, so memory
        stays bounded however many are given; ``progress`` is told how many each batch read."""
        readings: list[list[Prediction]] = []
        for start in range(0, len(pixels), max(1, batch_size)):
            batch = pixels[start : start + max(1, batch_size)]
            readings += self._read_batch(batch, top_k, constraints, min_confidence)
            if progress is not None:
                progress(len(batch))
        return readings

    def _read_batch(
        self, pixels: np.ndarray, top_k: int, constraints: Constraints | None, min_confidence: float | None
    ) -> list[list[Prediction]]:
        logits = self.logits(pixels)
        calibrated = decoding.softmax(logits / self.temperature) if self.temperature != 1.0 else None
        readings = heads.decode(decoding.softmax(logits), self.config.head, self.config.charset, top_k,
                                self.config.reading_constraints(constraints), scored=calibrated)
        flags = ood.flags(logits, self.ood_reference)
        readings = [[replace(r, ood=flag) for r in image] for image, flag in zip(readings, flags)]
        return decoding.abstain(readings, min_confidence)

    @overload
    def solve(self, image: ImageLike, constraints: Constraints | None = None,
              min_confidence: float | None = None) -> Prediction: ...

    @overload
    def solve(self, image: list[ImageLike] | tuple[ImageLike, ...], constraints: Constraints | None = None,
              min_confidence: float | None = None) -> list[Prediction]: ...

    def solve(
        self, image: ImageLike | list[ImageLike] | tuple[ImageLike, ...], constraints: Constraints | None = None,
        min_confidence: float | None = None,
    ) -> Prediction | list[Prediction]:
        """The best reading of one image; of a list (or tuple) of images, the list of their best readings:
        the batch API, read ``BATCH_SIZE`` at a time (a bad image raises its ImageError, naming it)."""
        if isinstance(image, (list, tuple)):
            if not image:
                return []
            pixels = np.stack([self.prepare(item) for item in image])
            return [r[0] for r in self.predict_pixels(pixels, 1, constraints, min_confidence)]
        return self.predict_pixels(self.prepare(image)[None], 1, constraints, min_confidence)[0][0]

    def describe(self) -> dict[str, Any]:
        size = self.source.stat().st_size if self.source.is_file() else None
        return {"name": self.config.model, "head": self.config.head.name, "charset": self.config.charset.symbols,
                "case_insensitive": self.config.charset.case_insensitive,
                "image": {"height": self.config.image.height, "width": self.config.image.width},
                "max_length": self.config.max_length,
                "label_lengths": list(self.config.label_lengths) if self.config.label_lengths else None,
                "backend": self.backend, "temperature": self.temperature,
                "source": str(self.source), "bytes": size}


def onnx_providers(device: str) -> list[str]:
    """ONNX Runtime's providers for ``device`` ("cpu" or "cuda"); CUDA falls back to the CPU, with a warning,
    where this ONNX Runtime has no CUDA provider (the CPU-only onnxruntime wheel, or no GPU)."""
    import onnxruntime as ort

    if device not in ("cpu", "cuda"):
        raise UsageError(f"device '{device}' is not one of cpu, cuda")
    if device == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        warnings.warn("ONNX Runtime has no CUDA provider here (install onnxruntime-gpu on a machine with a GPU); "
                      "solving on the CPU", RuntimeWarning, stacklevel=2)
    return ["CPUExecutionProvider"]


def _check_graph(session: Any, config: RunConfig, path: Path) -> None:
    """The metadata must describe the network it travels with: an image size the graph does not
    take fails in ONNX Runtime after allocating for the wrong size, and a charset or head that does
    not fit the outputs reads silently wrong text."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) < 1:
        raise ModelError(f"{path}: the network has {len(inputs)} inputs and {len(outputs)} outputs, not one image "
                         "in and logits out; export it with 'captchalab export'")
    taken = list(inputs[0].shape)
    wanted = [None, config.image.height, config.image.width, config.image.channels]
    if len(taken) != 4 or any(isinstance(t, int) and w is not None and t != w for t, w in zip(taken, wanted)):
        raise ModelError(f"{path}: its metadata says {config.image} {config.image.mode} images "
                         f"but the network takes shape {taken}; re-export it")
    given = list(outputs[0].shape)
    steps, classes = (given[1], given[2]) if len(given) == 3 else (None, None)
    if len(given) != 3 or (isinstance(classes, int) and classes != config.charset.num_classes):
        raise ModelError(f"{path}: its metadata names {len(config.charset.symbols)} symbols (plus the blank) but "
                         f"the network's output has shape {given}; re-export it")
    if config.head.fixed_length and isinstance(steps, int) and steps != config.max_length:
        raise ModelError(f"{path}: its metadata says a '{config.head.name}' head of {config.max_length} positions but "
                         f"the network reads {steps}; re-export it")


def _onnx_temperature(session: Any, path: Path) -> float:
    """The calibration in the ONNX metadata, else a run folder's calibration.json beside it, else 1."""
    raw = session.get_modelmeta().custom_metadata_map.get(calibration.METADATA_KEY)
    if raw is not None:
        return calibration.parse(raw, str(path))
    if (path.parent / "config.json").exists():
        return calibration.read(path.parent)
    return 1.0


def _onnx_ood_reference(session: Any, path: Path) -> dict[str, Any] | None:
    """The OOD reference in the ONNX metadata, else an ood.json beside a run's (or the bundled) model."""
    raw = session.get_modelmeta().custom_metadata_map.get(ood.METADATA_KEY)
    if raw is not None:
        return ood.parse(raw, str(path))
    if (path.parent / "config.json").exists():
        return ood.read(path.parent)
    return None


def _as_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array.squeeze()
    if np.issubdtype(array.dtype, np.floating) and array.size and float(np.nanmax(array)) <= 1.0:
        return (np.clip(array, 0, 1) * 255).astype(np.uint8).squeeze()
    return np.clip(array, 0, 255).astype(np.uint8).squeeze()


def load(model: str | Path | None = None, backend: str = "auto", threads: int = 0, device: str = "cpu") -> Predictor:
    return Predictor.load(model, backend, threads, device)


def iter_image_files(paths: Sequence[str | Path]) -> Iterator[Path]:
    """Files as given; folders expanded to their images, sorted."""
    for item in paths:
        path = Path(item)
        if path.is_dir():  # hidden files and folders (".hidden_X.png", ".cache/") are never inputs
            yield from sorted(p for p in path.rglob("*") if p.suffix.lower() in images.SUFFIXES and p.is_file()
                              and not any(part.startswith(".") for part in p.relative_to(path).parts))
        else:
            yield path
