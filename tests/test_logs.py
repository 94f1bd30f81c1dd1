import io
import json

import structlog
from pydantic import SecretStr

from pipeline.config import Settings
from pipeline.logs import REDACTED, configure_logging

KEY = "sk-live-abcdef0123456789"


def _configured(log_format: str) -> io.StringIO:
    stream = io.StringIO()
    settings = Settings(_env_file=None, api_key=SecretStr(KEY), log_format=log_format)
    configure_logging(settings, stream=stream)
    return stream


def test_json_lines_without_a_terminal_and_the_key_redacted_everywhere() -> None:
    stream = _configured("auto")  # a StringIO is not a terminal
    log = structlog.get_logger("t")
    log.info("event", header=f"Bearer {KEY}", nested={"list": [KEY]})
    try:
        raise RuntimeError(f"boom with {KEY}")
    except RuntimeError:
        log.exception("failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["header"] == f"Bearer {REDACTED}"
    assert lines[0]["nested"] == {"list": [REDACTED]}
    assert "boom with" in lines[1]["exception"]
    assert KEY not in stream.getvalue()


def test_console_format_has_no_colour_codes_when_not_a_terminal() -> None:
    stream = _configured("console")
    structlog.get_logger("t").info("hello", subject="alice")
    assert "hello" in stream.getvalue() and "\x1b[" not in stream.getvalue()


def test_level_filters_debug_by_default() -> None:
    stream = _configured("json")
    structlog.get_logger("t").debug("quiet")
    assert stream.getvalue() == ""


def test_console_logs_spell_control_characters_from_outside_as_escapes() -> None:
    stream = _configured("console")
    structlog.get_logger("t").warning("subject.stalled", subject="evil\x1b]0;owned\x07\u202e")
    shown = stream.getvalue()
    assert "\x1b]0;" not in shown and "\x07" not in shown and "\u202e" not in shown
    assert "evil\\x1b]0;owned\\x07\\u202e" in shown


def test_json_logs_drop_url_queries_and_lone_surrogates() -> None:
    stream = _configured("json")
    structlog.get_logger("t").info("x", url="https://bucket/a.png?X-Amz-Signature=s3cr3t",
                                   name="caf\udce9")
    line = json.loads(stream.getvalue())
    assert line["url"] == "https://bucket/a.png?…" and line["name"] == "caf\\udce9"


def test_lines_carry_the_context_bound_for_a_pass() -> None:
    stream = _configured("json")
    with structlog.contextvars.bound_contextvars(job="portraits", pass_id="1700000000-abcd"):
        structlog.get_logger("t").info("pass.started")
    line = json.loads(stream.getvalue())
    assert (line["job"], line["pass_id"]) == ("portraits", "1700000000-abcd")
