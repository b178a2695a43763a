"""device="cuda" (solve --engine ray --gpus): the CUDA provider where installed, else the CPU with a warning."""

from __future__ import annotations

import onnxruntime as ort
import pytest

import captchalab
from captchalab.errors import UsageError
from captchalab.inference.predictor import onnx_providers


def test_cuda_falls_back_to_the_cpu_with_a_warning() -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has a CUDA provider: there is no fallback to see")
    with pytest.warns(RuntimeWarning, match="no CUDA provider"):
        reader = captchalab.load(device="cuda")
    assert reader.backend == "onnx" and reader.solve(_image()).text


def test_cpu_asks_for_the_cpu_only_and_typos_are_refused() -> None:
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(UsageError, match="is not one of cpu, cuda"):
        onnx_providers("gpu")


def _image() -> bytes:
    import io

    from captcha.image import ImageCaptcha

    buffer = io.BytesIO()
    ImageCaptcha(160, 60).generate_image("AB12C").save(buffer, format="PNG")
    return buffer.getvalue()
