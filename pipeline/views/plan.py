"""How ``plan`` shows what the next pass would pay for: ``--json`` data and terminal lines.

Names and reasons come from the inbox: every line is a ``Text`` from
:func:`~pipeline.views.textsafe.line`, never markup.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from rich.console import Console

from ..budget import money_of, money_text, units_text
from ..store.ledger import Tally, sum_tallies
from .textsafe import line

if TYPE_CHECKING:
    from ..engine.plan import PassPlan, PlannedRequest, SubjectPlan
    from ..jobfile.spending import PricesSection


def plan_data(plan: PassPlan, prices: PricesSection | None) -> dict[str, Any]:
    """``plan --json``: per subject its requests, the totals, and what the ceiling stops."""
    stopped = {id(request): why for request, why in plan.stopped}
    total = plan.total
    return {
        "job": plan.job,
        "currency": prices.currency if prices is not None else None,
        "subjects": [_subject_json(s, stopped, prices) for s in plan.subjects],
        "waiting": list(plan.waiting),
        "queued_requests": plan.queued_requests,
        "total": {**_tally_json(total), "money": money_of(total, prices)},
        "asked": {**_tally_json(plan.asked), "money": money_of(plan.asked, prices)},
        "spent_so_far": {**_tally_json(plan.spent), "money": money_of(plan.spent, prices)},
        "stopped_by_ceiling": [{**_request_json(r), "why": why} for r, why in plan.stopped],
    }


def _subject_json(
    s: SubjectPlan, stopped: dict[int, str], prices: PricesSection | None
) -> dict[str, Any]:
    let_through = sum_tallies(r.tally for r in s.requests if id(r) not in stopped)
    return {
        "name": s.name, "version": s.version, "state": s.state, "note": s.note,
        "requests": [{**_request_json(r), "stopped": stopped.get(id(r))} for r in s.requests],
        "refused": [{"file": file, "reason": reason} for file, reason in s.refused],
        **_tally_json(let_through), "money": money_of(let_through, prices),
    }


def _request_json(r: PlannedRequest) -> dict[str, Any]:
    return {"subject": r.subject, "version": r.version, "endpoint": r.endpoint,
            "kind": r.kind, "prompt": r.prompt, "units": r.units, "resend": r.resend,
            "maybe": r.maybe}


def _tally_json(tally: Tally) -> dict[str, Any]:
    return {"trainings": dict(tally.trainings), "images": dict(tally.images)}


# --- the terminal ----------------------------------------------------------------------------


def print_plan(console: Console, data: dict[str, Any]) -> None:
    """Per subject what it would cost and why; the total; what the ceiling would stop."""
    currency = data["currency"]
    console.print(line((f"job {data['job']}: the next pass would", "bold")), soft_wrap=True)
    if not data["subjects"] and not data["waiting"]:
        console.print(line("  do nothing: no subject in the inbox or the state"))
    for subject in data["subjects"]:
        _print_subject(console, subject, currency)
    for name in data["waiting"]:
        console.print(line(f"  {name}: waiting for its folder to settle"), soft_wrap=True)
    total, asked = data["total"], data["asked"]
    console.print(line(("total", "bold"), f": {_cost(total, currency)}"), soft_wrap=True)
    if data["stopped_by_ceiling"]:
        console.print(line(("stopped by the spend ceiling", "yellow"),
                           f": {len(data['stopped_by_ceiling'])} request(s), "
                           f"{_cost(_minus(asked, total), currency)}"), soft_wrap=True)
        console.print(line(f"  {data['stopped_by_ceiling'][0]['why']}"), soft_wrap=True)
    console.print(line(f"spent so far: {_cost(data['spent_so_far'], currency)}"),
                  soft_wrap=True)
    if data["queued_requests"]:
        console.print(line(f"{data['queued_requests']} request(s) (retry, regenerate...) are "
                           "queued: the pass acts on them, which may add to this"),
                      soft_wrap=True)
    if currency is None:
        console.print(line("units only: the job file has no [prices] table"), soft_wrap=True)


def _print_subject(console: Console, s: dict[str, Any], currency: str | None) -> None:
    label = s["name"] if s["version"] == 1 else f"{s['name']} (v{s['version']})"
    state = "new version" if s["state"] == "new" else s["state"]
    requests = s["requests"]
    if requests:
        summary = _cost(s, currency)
    else:
        summary = s["note"] or "nothing to pay for"
    console.print(line((label, "bold"), f" ({state}): {summary}"), soft_wrap=True)
    if requests and s["note"]:
        console.print(line(f"    {s['note']}"), soft_wrap=True)
    for text in _request_lines(requests):
        console.print(line(f"    {text}"), soft_wrap=True)
    for refused in s["refused"]:
        console.print(line(f"    refused: {refused['file']}: {refused['reason']}"),
                      soft_wrap=True)


def _request_lines(requests: list[dict[str, Any]]) -> list[str]:
    """One line per training and per prompt; the ceiling's stops and re-sends said."""
    lines = []
    for r in requests:
        if r["endpoint"] == "training":
            text = f"train: 1 {r['kind']} training"
            if r["maybe"]:
                text += (" (its request was never answered: sent again only if the task "
                         "list does not hold it)")
        else:
            plural = "" if r["units"] == 1 else "s"
            text = f"{r['prompt']}: {r['units']} {r['endpoint']} image{plural}"
            if r["resend"]:
                text += " (sent again: its answer never came)"
        if r.get("stopped"):
            text += " - stopped by the spend ceiling"
        lines.append(text)
    return lines


def _cost(entry: dict[str, Any], currency: str | None) -> str:
    units = units_text(Tally(entry["trainings"], entry["images"]))
    money = money_text(entry.get("money"), currency)
    return f"{units} = {money}" if money else units


def _minus(asked: dict[str, Any], total: dict[str, Any]) -> dict[str, Any]:
    counts: dict[str, Counter[str]] = {}
    for key in ("trainings", "images"):
        counts[key] = Counter(asked[key])
        counts[key].subtract(total[key])
    return {key: {k: n for k, n in counts[key].items() if n} for key in counts} | {
        "money": None if asked["money"] is None or total["money"] is None
        else round(asked["money"] - total["money"], 6)}
