"""`extend-connector simulator --dialect-file`: the connector's [extend.dialect] table read as
the simulator's own dialect, so one file configures both sides."""

from __future__ import annotations

from pathlib import Path

import pytest

from extend_connector.settings import load_settings
from extend_connector.simulator import SimulatorConfig
from extend_connector.simulator.config import dialect_file_settings

DIALECT2 = Path(__file__).parent / "data" / "dialect2.toml"


def test_the_second_dialect_file_configures_the_simulator_like_the_connector() -> None:
    values = dialect_file_settings(DIALECT2)
    config = SimulatorConfig(**values)
    connector = load_settings(DIALECT2, env=False).extend.dialect
    assert config.auth_header == connector.auth_header == "X-Api-Key"
    assert config.auth_scheme == connector.auth_scheme == ""
    assert (config.page_param, config.page_size_param) == (
        connector.page_param,
        connector.page_size_param,
    )
    assert config.envelope == connector.envelope == "headers"
    assert config.changed_since_param == connector.changed_since_param == "modifiedSince"
    assert config.changed_since_format == connector.changed_since_format == "utc"
    assert config.renames() == {
        "Availability": {"availableBalance": "availableQty"},
        "OrderLight": {"orderNumberExternal": "externalReference"},
        "Product": {"productName": "title"},
    }


def test_token_comes_from_the_same_file_when_it_has_one(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[extend]\napi_token = "k-9"\n[extend.dialect]\npage_param = "p"\n')
    assert dialect_file_settings(path) == {"token": "k-9", "page_param": "p"}


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[extend.dialect]\nrate_limit_reset_header = "x-reset"\n', "rate_limit_reset_header"),
        ('[extend.dialect.paths]\nget_order = "GET /o/{orderNumber}"\n', "extend.dialect.paths"),
        ("[extend.dialect]\npage_param = 3\n", "extend.dialect.page_param must be a string"),
        ('[extend]\nbase_url = "http://x"\n', "no [extend.dialect] table"),
        ("[extend.dialect\n", "dialect file"),
    ],
)
def test_what_the_simulator_cannot_speak_is_refused_by_name(
    tmp_path: Path, text: str, named: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=named.replace("[", r"\[").replace(".", r"\.")):
        dialect_file_settings(path)


def test_settings_that_only_steer_the_client_are_accepted_and_ignored(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[extend.dialect]\npage_size = 250\n[extend.dialect.rate_limits]\nheavy = "5/1"\n'
    )
    assert dialect_file_settings(path) == {}


def test_an_unknown_field_model_is_refused() -> None:
    with pytest.raises(ValueError, match="field_renames"):
        SimulatorConfig(field_renames=(("Nope", "a", "b"),))
