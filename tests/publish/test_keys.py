from __future__ import annotations

import pytest

from skyrec.config import ConfigError
from skyrec.publish.keys import Keys, publication_id


@pytest.mark.parametrize("bad", ["v1\n", "a b", "", "x" * 129, "v1/../x"])
def test_key_components_are_checked_whole(bad: str) -> None:
    with pytest.raises(ConfigError):
        publication_id(bad, "20261123T180000")
    with pytest.raises(ConfigError):
        Keys(bad)


def test_valid_components_pass() -> None:
    assert publication_id("v1", "20261123T180000-r1-0a1b2c3d") == "v1.20261123T180000-r1-0a1b2c3d"
