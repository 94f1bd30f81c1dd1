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
