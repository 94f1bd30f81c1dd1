from pathlib import Path

from pydantic import SecretStr

from pipeline.config import Settings

EXAMPLE = Path(__file__).parent.parent / "config.env.example"


def _example_lines() -> dict[str, str]:
    lines = [line for line in EXAMPLE.read_text().splitlines() if line and line[0] != "#"]
    return dict(line.split("=", 1) for line in lines)


def test_example_lists_every_setting_with_its_default() -> None:
    example = _example_lines()
    defaults = Settings(_env_file=None)
    assert set(example) == {f"LORA_{name.upper()}" for name in Settings.model_fields}
    for name in Settings.model_fields:
        value = example[f"LORA_{name.upper()}"]
        default = getattr(defaults, name)
        assert value == ("" if default is None else str(default)), name


def test_example_parses_as_a_settings_file(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("LORA_API_KEY=\n", "LORA_API_KEY=sk-abc-0123456789\n")
    (tmp_path / "config.env").write_text(text)
    settings = Settings(_env_file=tmp_path / "config.env")
    assert settings.api_key == SecretStr("sk-abc-0123456789")
    assert settings.images_per_minute == 20
    assert settings.img2img_images_per_minute == 10


def test_key_is_never_shown() -> None:
    settings = Settings(_env_file=None, api_key=SecretStr("sk-very-secret-key-42"))
    assert "sk-very-secret-key-42" not in repr(settings) + str(settings) + settings.model_dump_json()


def test_environment_wins_over_the_file(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "config.env").write_text("LORA_UPLOAD_CONCURRENCY=3\n")
    monkeypatch.setenv("LORA_UPLOAD_CONCURRENCY", "5")
    assert Settings(_env_file=tmp_path / "config.env").upload_concurrency == 5


def test_timeouts_are_split_by_phase() -> None:
    timeout = Settings(_env_file=None, connect_timeout=1, read_timeout=2, total_timeout=3).client_timeout()
    assert (timeout.connect, timeout.sock_read, timeout.total) == (1, 2, 3)


def test_init_writes_the_example_as_it_is() -> None:
    from pipeline.cli.scaffold import CONFIG_TEMPLATE

    assert EXAMPLE.read_text(encoding="utf-8") == CONFIG_TEMPLATE
