"""What was paid for, per subject, read from the ledger: the data behind ``spend``, its
``--json``, and the spend in ``report.json`` and ``report.html``.

Units are what the ledger counts (:mod:`pipeline.store.ledger`): trainings by kind, images
by endpoint, every request sent or whose intent was recorded unless the service certainly
made nothing of it. Money is those units at the job's ``[prices]``, when it has them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console

from ..budget import money_of, money_text, units_text, unpriced
from ..store.ledger import LedgerEntry, Tally, sum_tallies
from ..store.protocol import StateStore
from .textsafe import line

if TYPE_CHECKING:
    from ..jobfile.loading import JobConfig
    from ..jobfile.spending import MaxSpendSection, PricesSection, SpendLimits


@dataclass(frozen=True)
class SpendLine:
    """What one subject version (or the whole job) cost."""

    spent: Tally
    requests: int  # counted requests
    resends: int  # of them, sent again after an answer that never came
    unanswered: int  # of them, with no answer on record (the service may have billed them)
    money: float | None

    def to_json(self) -> dict[str, Any]:
        return {"trainings": dict(self.spent.trainings), "images": dict(self.spent.images),
                "requests": self.requests, "resends": self.resends,
                "unanswered": self.unanswered, "money": self.money}


def spend_line(entries: Sequence[LedgerEntry], prices: PricesSection | None) -> SpendLine:
    counted = [e for e in entries if e.counted]
    spent = sum_tallies(e.tally for e in counted)
    return SpendLine(spent, len(counted), sum(1 for e in counted if e.resend),
                     sum(1 for e in counted if e.outcome is None), money_of(spent, prices))


def spend_by_subject(
    store: StateStore, job: str, prices: PricesSection | None
) -> dict[tuple[str, int], SpendLine]:
    """(subject, version) -> what it cost, by subject and version."""
    grouped: dict[tuple[str, int], list[LedgerEntry]] = {}
    for entry in store.ledger(job):
        grouped.setdefault((entry.subject, entry.version), []).append(entry)
    return {key: spend_line(grouped[key], prices) for key in sorted(grouped)}


def spend_data(job: JobConfig, store: StateStore) -> dict[str, Any]:
    """``spend --json``: per subject, the total, and the ceilings against it."""
    prices = job.prices
    name = job.job.name
    entries = store.ledger(name)
    total = spend_line(entries, prices)
    subjects = [{"name": subject, "version": version, **line_.to_json()}
                for (subject, version), line_ in spend_by_subject(store, name, prices).items()]
    return {
        "job": name,
        "currency": prices.currency if prices is not None else None,
        "unpriced": unpriced(total.spent, prices) if prices is not None else [],
        "subjects": subjects,
        "total": total.to_json(),
        "ceiling": _ceiling_json(job.max_spend, total),
    }


def _ceiling_json(limits: MaxSpendSection | None, total: SpendLine) -> dict[str, Any] | None:
    if limits is None:
        return None
    spent = {"trainings": total.spent.training_count, "images": total.spent.image_count,
             "money": total.money}
    return {
        "job": {key: {"limit": limit, "spent": spent[key]}
                for key, limit in _limits(limits).items()},
        "per_pass": _limits(limits.per_pass),
    }


def _limits(limits: SpendLimits) -> dict[str, float]:
    given = {"trainings": limits.trainings, "images": limits.images, "money": limits.money}
    return {key: value for key, value in given.items() if value is not None}


# --- the terminal ----------------------------------------------------------------------------


def print_spend(console: Console, data: dict[str, Any]) -> None:
    """One line per subject version, the total, the ceilings, and what the counts hold."""
    currency = data["currency"]
    if not data["subjects"]:
        console.print(line(f"job {data['job']}: nothing paid for yet"))
    else:
        console.print(line((f"job {data['job']}: spend", "bold")))
    for subject in data["subjects"]:
        label = subject["name"] if subject["version"] == 1 else (
            f"{subject['name']} (v{subject['version']})")
        console.print(line(f"  {label}: {_units_and_money(subject, currency)}"), soft_wrap=True)
    total = data["total"]
    if data["subjects"]:
        console.print(line(("  total", "bold"), f": {_units_and_money(total, currency)}"),
                      soft_wrap=True)
    if currency is None:
        console.print(line("  units only: the job file has no [prices] table"), soft_wrap=True)
    elif data["unpriced"]:
        console.print(line(f"  money unknown: [prices] has no {', '.join(data['unpriced'])}"),
                      soft_wrap=True)
    if data["ceiling"] is not None:
        console.print(line(f"  ceiling: {ceiling_text(data['ceiling'], currency)}"),
                      soft_wrap=True)
    for note in _notes(total):
        console.print(line(f"  note: {note}"), soft_wrap=True)


def _units_and_money(entry: dict[str, Any], currency: str | None) -> str:
    units = units_text(Tally(entry["trainings"], entry["images"]))
    money = money_text(entry["money"], currency)
    return f"{units} = {money}" if money else units


def ceiling_text(ceiling: dict[str, Any], currency: str | None) -> str:
    """``trainings 2 of 10, images 8 of 400; per pass: images 60``."""
    parts = []
    for key, value in ceiling["job"].items():
        if key == "money":
            spent = money_text(value["spent"], currency) or "unknown"
            parts.append(f"money {spent} of {money_text(value['limit'], currency)}")
        else:
            parts.append(f"{key} {value['spent']} of {value['limit']:g}")
    per_pass = ", ".join(
        f"money {money_text(limit, currency)}" if key == "money" else f"{key} {limit:g}"
        for key, limit in ceiling["per_pass"].items())
    text = ", ".join(parts) or "none over all passes"
    return text + (f"; per pass: {per_pass}" if per_pass else "")


def _notes(total: dict[str, Any]) -> list[str]:
    notes = []
    if total["unanswered"]:
        notes.append(f"{total['unanswered']} request(s) have no answer on record: counted, "
                     "since the service may have billed them")
    if total["resends"]:
        notes.append(f"{total['resends']} request(s) were sent again after an answer that "
                     "never came: counted, since the service may have billed both")
    return notes
