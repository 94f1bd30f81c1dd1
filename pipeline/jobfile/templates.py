"""Prompt templates: check them, render them, name them.

``instance_prompt``, ``prompts`` and ``extra_prompts`` are templates that may use
``{instance_prompt}``, ``{subject}`` and ``{class_word}``; ``{{`` and ``}}`` stand for literal
braces. Anything else (an unknown name, a format spec, a stray brace) is a
:class:`TemplateError` naming the template and the placeholders allowed.

    >>> fill_template("{subject} as a {class_word}", {"subject": "alice", "class_word": "cat"})
    'alice as a cat'
    >>> prompt_slug(2, "{instance_prompt}, in the snow")
    '02-in-the-snow'

The job file's fields check their templates with :func:`check_prompt_template` and
:func:`check_instance_template` (:mod:`pipeline.jobfile.schema`);
:mod:`pipeline.jobfile.loading` renders them for each subject.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Final

from ..errors import ConfigError

__all__ = [
    "INSTANCE_PLACEHOLDERS",
    "MAX_SLUG_LENGTH",
    "PLACEHOLDERS",
    "TemplateError",
    "check_instance_template",
    "check_prompt_template",
    "fill_template",
    "prompt_slug",
    "render_template",
    "template_literal",
]

PLACEHOLDERS: Final = ("instance_prompt", "subject", "class_word")
#: ``instance_prompt`` is itself a template, rendered first, so it cannot refer to itself.
INSTANCE_PLACEHOLDERS: Final = ("subject", "class_word")
MAX_SLUG_LENGTH: Final = 60
_FORMATTER = string.Formatter()


class TemplateError(ValueError):
    """A template with an unknown placeholder or a stray brace (a ValueError for pydantic)."""


def _template_parts(template: str, allowed: Iterable[str]) -> list[tuple[str, str | None]]:
    allowed = tuple(allowed)
    hint = ", ".join(f"{{{name}}}" for name in allowed)
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise TemplateError(
            f"template {template!r}: {exc} (placeholders allowed: {hint};"
            " write {{ or }} for a literal brace)"
        ) from None
    parts: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parsed:
        if field is not None and (field not in allowed or spec or conversion):
            shown = field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise TemplateError(
                f"template {template!r}: unknown placeholder {{{shown}}}"
                f" (placeholders allowed: {hint}; write {{{{ or }}}} for a literal brace)"
            )
        parts.append((literal, field))
    return parts


def fill_template(template: str, values: Mapping[str, str]) -> str:
    """Render ``template`` with exactly the placeholders in ``values``; raise TemplateError."""
    parts = _template_parts(template, values)
    return "".join(literal + (values[field] if field else "") for literal, field in parts)


def template_literal(template: str) -> str:
    """The template's fixed text, placeholders removed (for prompt slugs)."""
    return "".join(literal for literal, _ in _template_parts(template, PLACEHOLDERS))


def render_template(template: str, *, instance_prompt: str, subject: str, class_word: str) -> str:
    """Render a prompt template; ``instance_prompt`` may itself hold the other placeholders.

    >>> render_template("{instance_prompt}, studio", instance_prompt="ohwx {class_word}",
    ...                 subject="alice", class_word="woman")
    'ohwx woman, studio'

    Raises ConfigError naming the template and the allowed placeholders.
    """
    try:
        instance = fill_template(instance_prompt, {"subject": subject, "class_word": class_word})
        values = {"instance_prompt": instance, "subject": subject, "class_word": class_word}
        return fill_template(template, values)
    except TemplateError as exc:
        raise ConfigError(str(exc)) from None


def check_prompt_template(template: str) -> str:
    """``template`` unchanged if it uses only :data:`PLACEHOLDERS`; raise TemplateError."""
    _template_parts(template, PLACEHOLDERS)
    return template


def check_instance_template(template: str) -> str:
    """The same check for ``instance_prompt``, which may not use ``{instance_prompt}``."""
    _template_parts(template, INSTANCE_PLACEHOLDERS)
    return template


def prompt_slug(index: int, template: str) -> str:
    """A short, filesystem-safe name for a prompt: its number and the template's own words.

    >>> prompt_slug(1, "{instance_prompt}, studio portrait, soft light")
    '01-studio-portrait-soft-light'
    """
    ascii_text = unicodedata.normalize("NFKD", template_literal(template))
    words = re.findall(r"[a-z0-9]+", ascii_text.encode("ascii", "ignore").decode().lower())
    slug = f"{index:02d}"
    for word in words:
        room = MAX_SLUG_LENGTH - len(slug) - 1
        if len(word) > room:
            if "-" not in slug and room > 0:
                slug += "-" + word[:room]
            break
        slug += "-" + word
    return slug
