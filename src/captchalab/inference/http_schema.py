"""The HTTP API's request and response shapes as pydantic models: FastAPI validates with them and
generates ``/openapi.json`` (and the ``/docs`` and ``/redoc`` pages) from them.

Every text field has a length limit, so no value a client sends can cost more than a few
microseconds to check; ``allowed`` ranges are only expanded within the model's charset.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import UploadFile
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from captchalab.inference.http_config import NAME_PATTERN

MAX_TOP_K = 20
Case = Literal["any", "lower", "upper"]


class SolveOptions(BaseModel):
    """How to read: as query parameters, form fields or JSON keys (a body field wins over the query)."""

    model_config = ConfigDict(allow_inf_nan=False)

    model: str | None = Field(None, max_length=64, pattern=NAME_PATTERN, description="A served model's name.")
    top_k: int | None = Field(None, ge=1, le=MAX_TOP_K, description="Readings per image (default 1).")
    length: int | Annotated[str, StringConstraints(max_length=16)] | None = Field(
        None, description="Characters: `5`, a range `4-6`, `4-` (4 or more) or `-6` (at most 6).",
        examples=["5", "4-6"])
    allowed: str | None = Field(None, max_length=256, description="Allowed characters, ranges allowed.",
                                examples=["a-z0-9"])
    case: Case | None = Field(None, description="`lower`/`upper`: the site ignores case (default `any`).")
    min_confidence: float | None = Field(None, ge=0, le=1, description="Abstain below this confidence.")


class SolveJSON(SolveOptions):
    """``application/json`` body: base64 images (plain or ``data:`` URLs) and the options."""

    # strict: JSON true is not a top_k of 1, 2.5 is not 2; numbers stay numbers.
    model_config = ConfigDict(strict=True, allow_inf_nan=False, json_schema_extra={
        "examples": [{"images": ["iVBORw0KGgoAAAANSUhEUgAA..."], "top_k": 3, "length": "5"}]})

    images: list[str] = Field(description="Base64 images, or data: URLs.")


class SolveForm(SolveOptions):
    """``multipart/form-data`` body: one or more ``file`` fields and the options as form fields."""

    file: list[UploadFile] = Field(default_factory=list, description="Image files, in the order to answer.")


class Reading(BaseModel):
    text: str
    confidence: float


class SolveResult(BaseModel):
    """One image's reading; ``text`` is null (with ``abstained`` and ``guess``) below ``min_confidence``."""

    text: str | None
    confidence: float = Field(ge=0, le=1)
    abstained: bool | None = None
    guess: str | None = None
    ood: bool | None = Field(None, description="The image is unlike the model's training images: the reading, "
                             "however confident, is likely wrong (absent when the model has no reference).")
    file: str | None = Field(None, description="The uploaded file name (multipart only).")
    top_k: list[Reading] | None = Field(None, description="With top_k > 1: the best readings, best first.")


class SolveResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={
        "examples": [{"model": "default", "results": [{"text": "AB4D1", "confidence": 0.98, "file": "a.png"}]}]})

    model: str
    results: list[SolveResult]


class Health(BaseModel):
    status: Literal["ok"]
    default: str
    models: list[str]
    loaded: list[str]


class ImageSize(BaseModel):
    height: int
    width: int


class ModelInfo(BaseModel):
    name: str
    architecture: str
    head: str
    charset: str
    case_insensitive: bool
    image: ImageSize
    size: str = Field(examples=["160x60"])
    max_length: int
    # the shortest and longest training label: readings keep to them unless a request names a length
    label_lengths: list[int] | None = Field(default=None, examples=[[4, 6]])
    backend: str
    temperature: float
    bytes: int | None
    metrics: dict[str, Any] | None


class ErrorBody(BaseModel):
    """Every error, whatever its status."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"error": "images[0]: not valid base64"}]})

    error: str


SOLVE_BODY_DOC: dict[str, Any] = {  # the bodies FastAPI cannot infer from the form model
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": SolveJSON.model_json_schema()},
            "image/*": {"schema": {"type": "string", "format": "binary"},
                        "description": "One raw image (image/png, image/jpeg...); options in the query."},
        },
    },
}
ERRORS_DOC: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in {
        400: "A client mistake: bad JSON, base64, image, option or Host header.",
        401: "Missing or wrong API key (only when the server has one).",
        403: "A web page from another origin.",
        404: "Unknown model or path.",
        408: "The body did not arrive in time.",
        413: "Over a size or count limit.",
        415: "Not multipart, JSON or image/*.",
        500: "A model that cannot be loaded, or a bug.",
        503: "Busy: too many uploads at once, or the answer took too long.",
    }.items()
}
