"""Folder names and the service's words reach the terminal as text: never markup, never controls.

Every attack goes through the commands people run (``status``, ``run``, ``validate``,
``retry``, the error messages of ``main``), the live progress view and the demo, once on a
terminal console and once on a plain one. On both, nothing crashes, the hostile text shows
as :func:`printable` spells it, and no escape sequence, hyperlink or bidi control from it
reaches the output. The HTML report gets the same attacks in the places that become
attributes and links.
"""

from __future__ import annotations

import ast
import html
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from rich.console import Console

import pipeline.cli.commands
import pipeline.cli.demo
from pipeline.cli.commands import main
from pipeline.errors import BadCredentials, ConfigError, LockHeld, PipelineError, StateConflict
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import CANCELED, FAILED, GEN_DONE, REJECTED, TRAINING
from pipeline.views.progress import ProgressView
from pipeline.views.report import build_report, write_report
from pipeline.views.summary import (
    EXIT_BAD_CREDENTIALS,
    EXIT_FAILED,
    EXIT_LOCK_HELD,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_SIGINT,
    EXIT_USAGE,
    SubjectSummary,
    summarize,
)
from pipeline.views.textsafe import line, printable
from tests.conftest import force_generation_state, force_state, write_job

JOB = "test"
KEY = "sk-terminal-test-0123456789abcdef"
PIPELINE = Path(__file__).resolve().parents[2] / "pipeline"

#: What a failure reason or a name can carry. The store takes any text; a folder cannot
#: hold "/", so FOLDER_ATTACKS are the ones that fit in a folder name.
ATTACKS = {
    "closing-tag": "broken [/] input [/bold] :smile:",
    "markup-link": "[link=https://evil.example/x]click me[/link] [red]red[/] [bold]bold",
    "escape-codes": ("a\x1b]8;;https://evil.example/\x1b\\link\x1b]8;;\x1b\\ b\x1b]0;pwned\x07"
                     " c\x1b[2J d\r e\x9b31m f\x85 g\x7f h\tI\nJ"),
    "unicode-controls": "invoice\u202egnp.exe \u2066iso\u2069 \u200fmark a\u2028b\u2029c",
}
FOLDER_ATTACKS = {
    "markup-link": "[link=file:evil]click[red]red[bold]x",
    "escape-codes": "a\x1b]8;;file:evil\x1b\\link\x1b]8;;\x1b\\ b\x1b]0;pwned\x07 c\x1b[2J d\r"
                    " e\x9b31m f\x85 g\tI\nJ",
    "unicode-controls": "invoice\u202egnp.exe \u2066iso\u2069 \u200fmark a\u2028b\u2029c",
}
#: Characters that must never reach the output as they are, terminal or not.
RAW = ("\x07", "\x7f", "\x85", "\x9b", "\t", "\u200f", "\u202e", "\u2066", "\u2069",
       "\u2028", "\u2029")


@dataclass
class Screen:
    buffer: io.StringIO
    terminal: bool

    @property
    def out(self) -> str:
        return self.buffer.getvalue()


@pytest.fixture(params=["terminal", "plain"])
def screen(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Screen:
    """What ``main`` prints, on a colour terminal or a plain file (cron), captured."""
    buffer = io.StringIO()
    terminal = request.param == "terminal"
    monkeypatch.setenv("TERM", "xterm-256color")

    def console(file: Any, *, quiet: bool = False) -> Console:
        # Both streams (results and errors) land in one buffer: all of it must be safe.
        return Console(file=buffer, force_terminal=terminal, width=400, quiet=quiet,
                       markup=False, emoji=False, highlight=False,
                       color_system="truecolor" if terminal else None)

    monkeypatch.setattr(pipeline.cli.commands, "_console", console)
    return Screen(buffer, terminal)


def assert_safe(out: str, *, terminal: bool) -> None:
    """Nothing from outside drives the terminal: no OSC (rich writes one only for a link;
    nothing of ours makes one), no screen clearing, no raw control or bidi character."""
    assert "\x1b]" not in out
    assert "\x1b[2J" not in out
    for char in RAW:
        assert char not in out, repr(char)
    if not terminal:
        assert "\x1b" not in out and "\r" not in out


def assert_shown(out: str, text: str) -> None:
    assert printable(text) in out, (printable(text), out)


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    """A job file and settings; the service is never reached (nothing here is in flight)."""
    job = write_job(tmp_path, name=JOB)
    config = tmp_path / "config.env"
    config.write_text(f"LORA_API_KEY={KEY}\nLORA_BASE_URL=http://127.0.0.1:9\n"
                      f"LORA_STATE_DIR={tmp_path / 'state'}\nLORA_LOG_FORMAT=json\n")
    (tmp_path / "state").mkdir()
    return job, config


def seed(config: Path, attack: str, *, later: bool = False) -> None:
    """A rejected subject named ``attack`` carrying it everywhere (error, warning, refused
    file and reason), and a canceled one with it as its error and training task. Recorded an
    hour before the run (its exit code is not about these), or with ``later`` during it, as
    far as the run can tell (so it prints them as what it changed)."""
    past = time.time() + (60 if later else -3600)
    with SqliteStore(config.parent / "state" / "state.db") as store:
        store.add_version(JOB, attack, "fp", "subject", state=REJECTED, now=past, error=attack,
                          warnings=[attack], rejections=[(attack, attack)])
        carol = store.add_version(JOB, "carol", "fp", "subject", state=CANCELED, now=past,
                                  error=attack)
        store.update_subject(carol.id, now=past, task_id=attack, task_status=attack)


def cli(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


# --- the commands ----------------------------------------------------------------------------


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_status_shows_hostile_names_and_reasons_as_text(project, screen, attack) -> None:
    job, config = project
    seed(config, attack)
    assert cli(config, "status", str(job)) == EXIT_OK
    assert_safe(screen.out, terminal=screen.terminal)
    assert_shown(screen.out, attack)


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_run_shows_hostile_names_and_reasons_as_text(project, screen, attack) -> None:
    job, config = project
    seed(config, attack, later=True)
    assert cli(config, "run", str(job), "--max-wait", "5") == EXIT_FAILED  # canceled "now"
    assert_safe(screen.out, terminal=screen.terminal)
    assert_shown(screen.out, attack)


@pytest.mark.parametrize("name", FOLDER_ATTACKS.values(), ids=FOLDER_ATTACKS.keys())
def test_hostile_folder_names_in_the_inbox(project, screen, name) -> None:
    """A folder dropped in the inbox, holding a file with a hostile name too: ``validate``
    and ``run`` both refuse it and say so in plain text."""
    job, config = project
    folder = job.parent / "inbox" / name
    folder.mkdir()
    (folder / f"{name}.jpg").write_text("not a photo")
    assert cli(config, "validate", str(job.parent / "inbox")) == EXIT_REJECTED
    assert cli(config, "run", str(job), "--max-wait", "5") == EXIT_REJECTED
    assert_safe(screen.out, terminal=screen.terminal)
    assert_shown(screen.out, name)
    assert_shown(screen.out, f"{name}.jpg")


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_retry_messages_carry_names_and_reasons_as_text(project, screen, attack) -> None:
    """``retry`` of a rejected subject quotes its reason; of an unknown one, its name."""
    job, config = project
    seed(config, attack)
    assert cli(config, "retry", str(job), attack) == EXIT_USAGE
    assert cli(config, "retry", str(job), f"{attack}-unknown") == EXIT_USAGE
    assert_safe(screen.out, terminal=screen.terminal)
    for part in attack.split("\n"):  # an error's own line breaks are kept, indented
        assert_shown(screen.out, part)


#: How to raise each kind of error ``main`` reports, its exit code, and whether the message
#: keeps its own line breaks (indented) or is one line.
ERRORS: dict[str, tuple[Callable[[str], Exception], int, bool]] = {
    "config": (ConfigError, EXIT_USAGE, True),
    "state": (StateConflict, EXIT_USAGE, True),
    "lock": (LockHeld, EXIT_LOCK_HELD, False),
    "credentials": (lambda text: BadCredentials(401, text, text, "/v3/user"),
                    EXIT_BAD_CREDENTIALS, False),
    "pipeline": (PipelineError, EXIT_FAILED, True),
}


@pytest.mark.parametrize("error", ERRORS.values(), ids=ERRORS.keys())
@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_every_error_message_is_shown_as_text(project, screen, monkeypatch, attack,
                                              error) -> None:
    """Exception messages quote folder names and the service's words: every branch of
    ``main`` that prints one."""
    job, config = project
    make, code, kept_lines = error

    def failing(*_: object, **__: object) -> None:
        raise make(attack)

    monkeypatch.setattr(pipeline.cli.commands, "load_job", failing)
    assert cli(config, "status", str(job)) == code
    assert_safe(screen.out, terminal=screen.terminal)
    for part in attack.split("\n") if kept_lines else [attack]:
        assert_shown(screen.out, part)


def test_demo_prints_its_folders_as_text(tmp_path, screen, monkeypatch) -> None:
    """The demo's work folder is shown as typed, brackets and all (the emulator is then
    interrupted: the whole flow is tested in test_cli)."""
    workdir = tmp_path / "demo[" / "]x[link=file:evil]"

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.cli.demo, "serve_emulator", interrupted)
    assert main(["demo", "--workdir",
                 str(workdir)]) == EXIT_SIGINT
    assert str(workdir.resolve() / "inbox") in screen.out
    assert_safe(screen.out, terminal=screen.terminal)


# --- the live progress view ------------------------------------------------------------------


def _summary(name: str, state: str, **values: Any) -> SubjectSummary:
    base: dict[str, Any] = dict(
        name=name, version=1, state=state, images=12, rejected_files=[], warnings=[],
        training_name=None, task_id=None, task_status=None, progress=None, eta=None,
        model_name=None, lora_path=None, prompts_done=0, prompts_total=0, outputs=[],
        error=None,
    )
    return SubjectSummary(**{**base, **values})


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
async def test_progress_view_shows_names_statuses_and_errors_as_text(monkeypatch,
                                                                     attack) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    out = io.StringIO()
    console = Console(file=out, width=400, force_terminal=True, color_system="truecolor")
    subjects = [
        _summary(attack, TRAINING, task_id="t-1", task_status=attack, progress=40, eta=90),
        _summary(f"{attack} 2", "generating", prompts_done=1, prompts_total=2, version=2),
        _summary(f"{attack} 3", FAILED, error=attack),
    ]
    async with ProgressView(console, lambda: subjects, title=attack, interval=60) as view:
        assert view.active
    assert_safe(out.getvalue(), terminal=True)
    assert_shown(out.getvalue(), attack)


# --- the building blocks ---------------------------------------------------------------------


def test_printable_spells_every_control_as_an_escape() -> None:
    assert printable("a\x1b[31mb\x07\x00\x7f\x85\x9b") == "a\\x1b[31mb\\x07\\x00\\x7f\\x85\\x9b"
    assert printable("tab\there\nnew\rline") == "tab\\there\\nnew\\rline"
    assert printable("\u202e\u202a\u2066\u2069\u200e\u200f\u061c\u2028\u2029") == (
        "\\u202e\\u202a\\u2066\\u2069\\u200e\\u200f\\u061c\\u2028\\u2029")
    # Lone surrogates (undecodable bytes of a name, odd JSON) cannot even be encoded.
    assert printable("bad\udcffname\ud800") == "bad\\udcffname\\ud800"
    printable("bad\udcff\ud800").encode("utf-8")


def test_printable_leaves_ordinary_text_alone() -> None:
    ordinary = "Zoë, 日本語, עברית, 👩‍👩‍👧 [red] C:\\x\\y 50% <b>&"
    assert printable(ordinary) == ordinary
    assert printable(printable(ATTACKS["escape-codes"])) == printable(ATTACKS["escape-codes"])


def test_line_keeps_our_styles_and_never_reads_markup() -> None:
    text = line(("error:", "red"), " ", "[bold]x[/]\x1b")
    assert text.plain == "error: [bold]x[/]\\x1b"
    assert [(span.start, span.end, span.style) for span in text.spans] == [(0, 6, "red")]


#: Calls that put text on a console or in a table; a str made from values there (an
#: f-string, +, %, .format, .join) would be read as markup and could carry controls.
_PRINTING = {"print", "add_row", "Text", "assemble", "from_markup", "Table"}


def _built_strings(node: ast.Call) -> list[ast.expr]:
    values = [*node.args, *(k.value for k in node.keywords if k.arg == "title")]
    return [v for v in values if isinstance(v, ast.JoinedStr | ast.BinOp) or (
        isinstance(v, ast.Call) and isinstance(v.func, ast.Attribute)
        and v.func.attr in ("format", "join"))]


@pytest.mark.parametrize("module", ["cli/commands.py", "views/console.py", "views/progress.py",
                                    "cli/demo.py"])
def test_outside_text_reaches_a_console_only_through_line(module) -> None:
    """The rule that makes the rest hold: text built from values reaches ``print``, a table
    or a ``Text`` only inside :func:`line`."""
    tree = ast.parse((PIPELINE / module).read_text(encoding="utf-8"))
    offenders = [
        f"{module}:{node.lineno}" for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _called(node) in _PRINTING and _built_strings(node)
    ]
    assert offenders == []


def _called(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


# --- the HTML report -------------------------------------------------------------------------


class _Page(HTMLParser):
    """Every tag with its attributes, and the text, as a browser would read them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_report_keeps_hostile_names_out_of_tags_attributes_and_links(tmp_path: Path) -> None:
    """A folder named like a ``javascript:`` URL, whose picture and LoRA file become links,
    and reasons that try to close an attribute or open a script: all stay text."""
    scheme = "javascript:alert(1)"
    breakout = "x\" onmouseover=\"alert(1)\" data-x='"
    script = "</p><script>alert(1)</script><a href=\"javascript:alert(1)\">"
    outbox = tmp_path / "outbox"
    folder = outbox / JOB / scheme
    picture = folder / "01-x" / f"{breakout}.png"
    picture.parent.mkdir(parents=True)
    picture.write_bytes(b"not a picture")
    lora = folder / f"{breakout}.safetensors"
    lora.write_bytes(b"x")
    with SqliteStore(tmp_path / "state.db") as store:
        subject = store.add_version(JOB, scheme, "fp", "subject", state=REJECTED, now=1.0,
                                    warnings=[breakout], rejections=[(breakout, script)])
        force_state(store, subject.id, now=2.0, state=FAILED, error=script, task_id=breakout,
                             task_status=breakout, model_name=breakout, lora_path=str(lora))
        (gen,) = store.ensure_generations(subject.id, [(1, breakout, script)], now=2.0)
        store.record_output(gen.id, 1, str(picture))
        force_generation_state(store, gen.id, now=3.0, state=GEN_DONE, error=script)
        store.add_version(JOB, breakout, "fp", "subject", state=REJECTED, now=1.0, error=scheme)
        data = build_report(JOB, summarize(store, JOB), outbox, store, now=4.0)
    _, html_path = write_report(data, outbox)
    page = _Page()
    page.feed(html_path.read_text(encoding="utf-8"))

    assert "script" not in [tag for tag, _ in page.tags]
    for tag, attrs in page.tags:
        assert not [a for a in attrs if a.startswith("on") or a == "data-x"], (tag, attrs)
        for attribute in ("href", "src"):
            value = attrs.get(attribute)
            if value is None or value.startswith(("#", "data:image/jpeg;base64,")):
                continue
            assert urlsplit(value).scheme == "" and not value.startswith("//"), value
            assert (html_path.parent / unquote(value)).exists(), value
    text = "".join(page.text)
    for hostile in (scheme, breakout, script):
        assert hostile in text
    assert html.escape(script) in html_path.read_text(encoding="utf-8")



def test_the_report_page_spells_out_a_bidi_override_instead_of_obeying_it(tmp_path) -> None:
    turned = "photo\u202egnp.exe"  # shows as "photoexe.png" where the override is obeyed
    with SqliteStore(tmp_path / "state.db") as store:
        store.add_version(JOB, "alice", "fp", "subject", state=REJECTED, now=1.0,
                          rejections=[(turned, f"{turned} is a text file")])
        data = build_report(JOB, summarize(store, JOB), tmp_path / "outbox", store, now=2.0)
    _, html_path = write_report(data, tmp_path / "outbox")

    page = html_path.read_text(encoding="utf-8")
    assert "\u202e" not in page
    assert "photo\\u202egnp.exe" in page
