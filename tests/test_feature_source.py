"""Both caches stage 2 reads (a cache file, groups extracted in memory) implement the declared
FeatureSource protocol, with the protocol's method signatures."""

from __future__ import annotations

import inspect

import numpy as np

from erc.features.memory_cache import MemoryCache, MemoryGroup
from erc.features.reader import FeatureCache
from erc.features.schema import UtteranceTable
from erc.features.source import FeatureSource
from tests.synth_cache import write_synthetic_cache

METHODS = [name for name, v in vars(FeatureSource).items() if inspect.isfunction(v) and not name.startswith("_")]


def _memory_cache() -> MemoryCache:
    cols = {"utterance_id": ["u0", "u1"], "dialogue_id": ["d", "d"], "turn": [0, 1], "speaker": ["A", "B"],
            "text": ["hi", "yo"], "label": ["x", "y"], "split": ["test", "test"]}
    group = MemoryGroup(np.zeros((2, 3), np.float32), np.ones(2, bool), ["ok", "ok"], None, None, {})
    return MemoryCache(UtteranceTable("mem", ["x", "y"], "h", cols), {("text", "enc"): group})


def test_a_cache_file_and_a_memory_cache_are_feature_sources(tmp_path) -> None:
    path = write_synthetic_cache(tmp_path / "c.h5", n_dialogues=3)
    with FeatureCache(path) as fc:
        assert isinstance(fc, FeatureSource)
    assert isinstance(_memory_cache(), FeatureSource)


def test_both_caches_take_the_protocols_parameters() -> None:
    assert {"pooled", "present", "status", "frames", "group", "encoders"} <= set(METHODS)
    for name in METHODS:
        want = list(inspect.signature(getattr(FeatureSource, name)).parameters)
        for cls in (FeatureCache, MemoryCache):
            assert list(inspect.signature(getattr(cls, name)).parameters) == want, (cls.__name__, name)
