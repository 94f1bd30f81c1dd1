"""The job file's money tables: ``[prices]`` and ``[max_spend]`` (see ``jobs/README.md``).

Spend is counted in units: trainings (by kind) and images (by endpoint), as the ledger
records each paid request. ``[prices]`` turns units into money; the pipeline never guesses
the service's prices, so with no table spend is shown and capped in units only.

    [prices]
    currency = "USD"
    subject_training = 2.50
    style_training = 2.50
    txt2img_image = 0.002
    img2img_image = 0.003

    [max_spend]            # over every pass of the job, as the ledger counts
    trainings = 10
    images = 400
    money = 30.0           # in [prices] currency: needs [prices]
    [max_spend.per_pass]   # within one pass (a watch is one pass from its start)
    images = 60

Trainings and images are capped apart rather than as one "unit" count: a training costs
hundreds of times a picture, so one count mixing them would cap neither.
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, StringConstraints, model_validator

from .schema import StrictModel

Price = Annotated[float, Field(ge=0)]
Count = Annotated[int, Field(ge=0)]


class PricesSection(StrictModel):
    """``[prices]``: what one training of each kind and one image of each endpoint cost,
    in ``currency``. A price left out makes money unknown where it is needed."""

    currency: Annotated[str, StringConstraints(min_length=1, max_length=16)]
    subject_training: Price | None = None
    style_training: Price | None = None
    txt2img_image: Price | None = None
    img2img_image: Price | None = None

    def training(self, kind: str) -> float | None:
        return self.subject_training if kind == "subject" else self.style_training

    def image(self, endpoint: str) -> float | None:
        return self.txt2img_image if endpoint == "txt2img" else self.img2img_image


class SpendLimits(StrictModel):
    """Ceilings, each optional: a paid request that would pass any of them is not sent."""

    trainings: Count | None = None
    images: Count | None = None
    money: Annotated[float, Field(ge=0)] | None = None

    @property
    def uses_money(self) -> bool:
        return self.money is not None


class MaxSpendSection(SpendLimits):
    """``[max_spend]``: ceilings over every pass of the job, and ``per_pass`` ones."""

    per_pass: SpendLimits = Field(default_factory=SpendLimits)

    @property
    def uses_money(self) -> bool:
        return self.money is not None or self.per_pass.money is not None

    @model_validator(mode="after")
    def _something(self) -> Self:
        given = [self.trainings, self.images, self.money, self.per_pass.trainings,
                 self.per_pass.images, self.per_pass.money]
        if all(value is None for value in given):
            raise ValueError("max_spend sets no ceiling: give trainings, images or money "
                             "(or per_pass ones), or leave the table out")
        return self
