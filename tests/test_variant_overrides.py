"""`erc ablate --set` must not silently undo a listed variant's switch: a key a variant switches is
refused with one line naming the key and the variant."""

from __future__ import annotations

import pytest

from erc.errors import UserError
from erc.heads import get_head
from erc.heads.registry import check_variant_overrides


def test_a_set_key_that_a_listed_variant_switches_is_refused_naming_both() -> None:
    matav = get_head("matav")
    with pytest.raises(UserError) as e:
        check_variant_overrides(matav, ["full", "no-mec"], {"use_mec": "true"})
    msg = str(e.value)
    assert "use_mec" in msg and "'no-mec'" in msg and "\n" not in msg


def test_keys_no_listed_variant_switches_pass() -> None:
    matav = get_head("matav")
    check_variant_overrides(matav, ["full", "no-mec"], {"dim": "32"})
    check_variant_overrides(matav, ["full"], {"use_mec": "false"})  # full switches nothing
    check_variant_overrides(matav, ["full", "no-mec"], None)


@pytest.mark.parametrize("name", ["matav", "jfm", "deepmsi", "mlp", "gru"])
def test_every_switch_of_every_variant_is_caught(name: str) -> None:
    head = get_head(name)
    for variant, switches in head.variants.items():
        for key, value in switches.items():
            with pytest.raises(UserError, match=variant):
                check_variant_overrides(head, [variant], {key: str(value)})
