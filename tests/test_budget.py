"""Money and ceilings as pure functions of the ledger's units and the job's tables."""

from __future__ import annotations

import pytest

from pipeline.budget import ceiling_refusal, money_of, money_text, units_text
from pipeline.jobfile.spending import MaxSpendSection, PricesSection, SpendLimits
from pipeline.store.ledger import Tally

PRICES = PricesSection(currency="USD", subject_training=2.5, style_training=4.0,
                       txt2img_image=0.002, img2img_image=0.003)
ONE_IMAGE = Tally(images={"txt2img": 1})
ONE_TRAINING = Tally(trainings={"subject": 1})


def test_money_is_units_times_prices() -> None:
    spent = Tally(trainings={"subject": 2, "style": 1}, images={"txt2img": 10, "img2img": 4})
    assert money_of(spent, PRICES) == pytest.approx(2 * 2.5 + 4.0 + 10 * 0.002 + 4 * 0.003)
    assert money_of(spent, None) is None
    assert money_of(Tally(), PRICES) == 0.0


def test_a_missing_price_makes_money_unknown_never_guessed() -> None:
    partial = PricesSection(currency="USD", subject_training=2.5)
    assert money_of(ONE_TRAINING, partial) == 2.5
    assert money_of(ONE_TRAINING + ONE_IMAGE, partial) is None


def test_texts() -> None:
    assert units_text(Tally()) == "nothing"
    assert units_text(ONE_TRAINING) == "1 subject training"
    assert units_text(Tally(images={"txt2img": 4, "img2img": 2})) == (
        "6 images (img2img 2, txt2img 4)")
    assert money_text(2.5, "USD") == "2.50 USD"
    assert money_text(0.006, "USD") == "0.0060 USD"
    assert money_text(1.0, None) == money_text(None, "USD") == ""


def _refusal(limits: MaxSpendSection, job: Tally, this_pass: Tally, request: Tally,
             prices: PricesSection | None = None) -> str | None:
    return ceiling_refusal(limits, prices, job, this_pass, request, job_file="jobs/j.toml")


def test_no_ceiling_refuses_nothing() -> None:
    assert ceiling_refusal(None, None, Tally(), Tally(), ONE_TRAINING, job_file="j") is None


def test_the_request_that_would_pass_the_ceiling_is_refused_not_the_one_reaching_it() -> None:
    limits = MaxSpendSection(images=3)
    assert _refusal(limits, Tally(images={"txt2img": 2}), Tally(), ONE_IMAGE) is None
    refusal = _refusal(limits, Tally(images={"txt2img": 3}), Tally(), ONE_IMAGE)
    assert refusal is not None
    assert refusal.startswith("spend ceiling reached (max_spend.images = 3): 1 txt2img image "
                              "would bring the job's total (every pass) to 4 images")
    assert "raise it in jobs/j.toml and run again" in refusal.lower()
    # A request of several pictures counts them all.
    assert _refusal(limits, Tally(images={"txt2img": 2}), Tally(),
                    Tally(images={"img2img": 2})) is not None


def test_trainings_and_images_are_capped_apart() -> None:
    limits = MaxSpendSection(trainings=1)
    spent = Tally(trainings={"subject": 1})
    assert _refusal(limits, spent, spent, ONE_IMAGE) is None  # images are not capped
    assert "max_spend.trainings = 1" in (_refusal(limits, spent, spent, ONE_TRAINING) or "")
    assert "max_spend.trainings = 0" in (
        _refusal(MaxSpendSection(trainings=0), Tally(), Tally(), ONE_TRAINING) or "")


def test_the_per_pass_ceiling_counts_this_pass_only_and_says_the_next_one_goes_on() -> None:
    limits = MaxSpendSection(per_pass=SpendLimits(images=2))
    lots = Tally(images={"txt2img": 100})
    assert _refusal(limits, lots, Tally(images={"txt2img": 1}), ONE_IMAGE) is None
    refusal = _refusal(limits, lots, Tally(images={"txt2img": 2}), ONE_IMAGE)
    assert refusal is not None and "max_spend.per_pass.images = 2" in refusal
    assert "this pass's total" in refusal and "The next pass goes on from here" in refusal


def test_a_money_ceiling_prices_the_request() -> None:
    limits = MaxSpendSection(money=5.0)
    spent = Tally(trainings={"subject": 2})  # 5.00 USD
    assert _refusal(limits, Tally(trainings={"subject": 1}), Tally(), ONE_TRAINING,
                    PRICES) is None  # exactly 5.00
    refusal = _refusal(limits, spent, Tally(), ONE_IMAGE, PRICES)
    assert refusal is not None and "max_spend.money = 5 USD" in refusal
    assert "to 5.0020 USD" in refusal


def test_a_money_ceiling_refuses_what_it_cannot_price() -> None:
    partial = PricesSection(currency="USD", subject_training=2.5)
    refusal = _refusal(MaxSpendSection(money=100), Tally(), Tally(), ONE_IMAGE, partial)
    assert refusal is not None and "[prices] has no txt2img_image" in refusal
