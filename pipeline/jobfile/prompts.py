"""The entries of ``[generation] prompts`` and ``extra_prompts``: a text, or a table.

A plain string is a txt2img prompt, as it always was. A table names more: with an
``init_image`` the prompt goes through img2img, starting from that picture, changed by
``strength`` (0 keeps the picture, 1 all but ignores it; 0.5 when not given)::

    prompts = [
      "{instance_prompt}, studio portrait",
      { prompt = "{instance_prompt} as an oil painting", init_image = "refs/pose.jpg", strength = 0.6 },
    ]

The init image's path is relative to the job file, or to the subject's folder for a
``subject.toml``'s prompts; :mod:`pipeline.jobfile.loading` resolves it and
:mod:`pipeline.inputs.init_images` reads and judges the picture.
"""  # noqa: E501

from __future__ import annotations

from typing import Annotated, Any, Final, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    model_validator,
)

from ..api.contract import DEFAULT_IMG2IMG_STRENGTH
from .templates import check_prompt_template

__all__ = [
    "ENTRY_TAGS",
    "ImagePrompt",
    "PromptEntry",
    "PromptTemplate",
    "as_table",
]

MAX_PATH_CHARS: Final = 4096
#: Where a table's or a text's fields sit in a validation error's location (after the
#: index); the loader leaves them out of the field it names.
TEXT_TAG: Final = "text"
TABLE_TAG: Final = "table"
ENTRY_TAGS: Final = frozenset({TEXT_TAG, TABLE_TAG})


def _plain_path(value: str) -> str:
    if "\0" in value or not value.strip():
        raise ValueError("must name a picture file, such as 'refs/pose.jpg'")
    return value


PromptTemplate = Annotated[str, StringConstraints(min_length=1),
                           AfterValidator(check_prompt_template)]
InitImagePath = Annotated[str, StringConstraints(max_length=MAX_PATH_CHARS),
                          AfterValidator(_plain_path)]
InitStrength = Annotated[float, Field(ge=0, le=1)]


class ImagePrompt(BaseModel):
    """A prompt in table form: ``prompt``, and optionally the ``init_image`` it starts from
    (img2img) and how much it may change it (``strength``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt: PromptTemplate
    init_image: InitImagePath | None = None
    strength: InitStrength | None = None

    @model_validator(mode="after")
    def _strength_needs_an_image(self) -> Self:
        if self.strength is not None and self.init_image is None:
            raise ValueError(
                "strength is how much img2img changes the init image: name an init_image "
                "too, or leave strength out"
            )
        return self

    @property
    def init_strength(self) -> float | None:
        """The strength img2img is sent (the service's default when not given); None for
        a txt2img prompt."""
        if self.init_image is None:
            return None
        return DEFAULT_IMG2IMG_STRENGTH if self.strength is None else self.strength


def _entry_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return TEXT_TAG
    if isinstance(value, dict | ImagePrompt):
        return TABLE_TAG
    return None


#: One entry of ``prompts`` or ``extra_prompts``: a template, or an :class:`ImagePrompt`.
PromptEntry = Annotated[
    Annotated[PromptTemplate, Tag(TEXT_TAG)] | Annotated[ImagePrompt, Tag(TABLE_TAG)],
    Discriminator(
        _entry_kind,
        custom_error_type="prompt_entry",
        custom_error_message=(
            "must be a prompt, or a table such as { prompt = \"...\", init_image = "
            "\"refs/pose.jpg\", strength = 0.6 }"
        ),
    ),
]


def as_table(entry: str | ImagePrompt) -> ImagePrompt:
    """Any entry as a table (a plain prompt has no init image)."""
    return entry if isinstance(entry, ImagePrompt) else ImagePrompt(prompt=entry)
