"""TrainConfig: a head's ``train_defaults`` are declared on the base class and checked against the
config's fields; given options override them."""

from __future__ import annotations

import pytest

from erc.heads.baselines import MLPHead
from erc.heads.registry import HEADS, get_head
from erc.train.config import TrainConfig


@pytest.mark.parametrize("name", list(HEADS))
def test_every_registered_head_declares_only_train_config_keys(name: str) -> None:
    head = get_head(name)
    cfg = TrainConfig.for_head(head)
    for key, value in head.train_defaults.items():
        assert getattr(cfg, key) == value


def test_a_head_declaring_an_unknown_train_defaults_key_is_refused() -> None:
    class Misspelt(MLPHead):
        train_defaults = {"batchsize": 8}

    with pytest.raises(ValueError, match="batchsize"):
        TrainConfig.for_head(Misspelt)


def test_given_options_win_over_the_heads_defaults_which_win_over_the_config() -> None:
    class Paper(MLPHead):
        train_defaults = {"lr": 5e-4, "batch_size": 8}

    cfg = TrainConfig.for_head(Paper, batch_size=4, lr=None)
    assert (cfg.batch_size, cfg.lr, cfg.epochs) == (4, 5e-4, TrainConfig().epochs)


def test_the_base_head_declares_empty_train_defaults() -> None:
    from erc.heads.base import Head

    assert Head.train_defaults == {}
    assert TrainConfig.for_head(MLPHead) == TrainConfig()
