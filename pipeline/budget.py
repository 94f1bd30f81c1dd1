"""Money and ceilings: pure functions over the ledger's units and the job's ``[prices]``
and ``[max_spend]`` tables. The engine asks :func:`ceiling_refusal` before each paid
request (inside the store's transaction); ``spend``, ``plan`` and the report price units
with :func:`money_of`.

    >>> prices = PricesSection(currency="USD", subject_training=2.0, txt2img_image=0.01)
    >>> money_of(Tally(trainings={"subject": 1}, images={"txt2img": 4}), prices)
    2.04
    >>> spent = Tally(trainings={"subject": 1}, images={"txt2img": 3})
    >>> print(ceiling_refusal(MaxSpendSection(images=3), None, spent, spent,
    ...                       Tally(images={"txt2img": 1}), job_file="job.toml"))
    spend ceiling reached (max_spend.images = 3): 1 txt2img image would bring the job's total \
(every pass) to 4 images; nothing was sent. Raise it in job.toml and run again: the subject \
goes on from here
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .jobfile.spending import MaxSpendSection, PricesSection, SpendLimits
from .store.ledger import Tally

#: Money is shown and compared at this many decimals (prices of a picture are fractions of
#: a cent; a float sum must not refuse a request for a rounding error).
MONEY_DECIMALS = 6


def money_of(tally: Tally, prices: PricesSection | None) -> float | None:
    """What ``tally`` costs at ``prices``; None with no prices, or when a unit it holds has
    no price in the table (money is then unknown, never guessed)."""
    if prices is None:
        return None
    total = 0.0
    for kind, count in tally.trainings.items():
        price = prices.training(kind)
        if price is None:
            return None
        total += price * count
    for endpoint, count in tally.images.items():
        price = prices.image(endpoint)
        if price is None:
            return None
        total += price * count
    return round(total, MONEY_DECIMALS)


def unpriced(tally: Tally, prices: PricesSection) -> list[str]:
    """The ``[prices]`` fields ``tally`` needs that the table leaves out."""
    missing = [f"{kind}_training" for kind in tally.trainings if prices.training(kind) is None]
    missing += [f"{endpoint}_image" for endpoint in tally.images
                if prices.image(endpoint) is None]
    return missing


def money_text(amount: float | None, currency: str | None) -> str:
    """``12.50 USD`` (``0.0060 USD`` for fractions of a cent); empty when unknown."""
    if currency is None or amount is None:
        return ""
    return f"{amount:.{_decimals(amount)}f} {currency}"


def _decimals(amount: float) -> int:
    return 2 if round(amount, 2) == round(amount, MONEY_DECIMALS) else 4


def units_text(tally: Tally) -> str:
    """``1 subject training, 6 images (txt2img 4, img2img 2)``; ``nothing`` when empty."""
    parts = [_count(tally.trainings, "training"), _count(tally.images, "image")]
    return ", ".join(part for part in parts if part) or "nothing"


def _count(by_key: dict[str, int], noun: str) -> str:
    total = sum(by_key.values())
    if not total:
        return ""
    plural = noun if total == 1 else noun + "s"
    if len(by_key) == 1:
        return f"{total} {next(iter(by_key))} {plural}"
    return f"{total} {plural} (" + ", ".join(f"{k} {n}" for k, n in sorted(by_key.items())) + ")"


@dataclass(frozen=True)
class _Scope:
    """One set of ceilings and what already counts against it."""

    limits: SpendLimits
    spent: Tally
    field: str  # how the job file spells the table: "max_spend" or "max_spend.per_pass"
    what: str  # whose total it is: the job's or this pass's
    then: str  # how the subject goes on


def ceiling_refusal(
    limits: MaxSpendSection | None, prices: PricesSection | None, job_spent: Tally,
    pass_spent: Tally, request: Tally, *, job_file: Path | str,
) -> str | None:
    """Why ``request`` may not be sent, or None. It may not when, added to what the job
    (every pass) or this pass has spent, it would pass a ceiling: trainings, images, or
    money (which needs a price for each of its units)."""
    if limits is None:
        return None
    scopes = (
        _Scope(limits, job_spent, "max_spend", "the job's total (every pass)",
               f"raise it in {job_file} and run again: the subject goes on from here"),
        _Scope(limits.per_pass, pass_spent, "max_spend.per_pass", "this pass's total",
               f"the next pass goes on from here (or raise it in {job_file})"),
    )
    for scope in scopes:
        refusal = _scope_refusal(scope, prices, request)
        if refusal is not None:
            return refusal
    return None


def _scope_refusal(scope: _Scope, prices: PricesSection | None, request: Tally) -> str | None:
    limits, after = scope.limits, scope.spent + request
    checks = [("trainings", limits.trainings, request.training_count, after.training_count),
              ("images", limits.images, request.image_count, after.image_count)]
    for name, limit, asked, total in checks:
        if limit is not None and asked and total > limit:
            return _refused(scope, f"{scope.field}.{name} = {limit}",
                            f"{units_text(request)} would bring {scope.what} to {total} "
                            f"{name}")
    if limits.money is None or prices is None or not request:
        return None
    missing = unpriced(after, prices)
    if missing:
        return _refused(scope, f"{scope.field}.money = {limits.money:g}",
                        f"[prices] has no {', '.join(missing)}, so the cost of "
                        f"{units_text(request)} cannot be checked against it (set them)")
    total_money = money_of(after, prices) or 0.0
    if total_money > limits.money + 10 ** -MONEY_DECIMALS:
        return _refused(scope, f"{scope.field}.money = {limits.money:g} {prices.currency}",
                        f"{units_text(request)} would bring {scope.what} to "
                        f"{money_text(total_money, prices.currency)}")
    return None


def _refused(scope: _Scope, ceiling: str, detail: str) -> str:
    return (f"spend ceiling reached ({ceiling}): {detail}; nothing was sent. "
            f"{scope.then[0].upper()}{scope.then[1:]}")
