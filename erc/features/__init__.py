"""The feature cache: a root HDF5 file linking one file per group (schema in :mod:`erc.features.schema`).

A map for a newcomer. This package is the cache contract only: it imports no stage-1 or stage-2
code (an import-linter contract).

The write path, in the order a commit runs it::

    writer.CacheWriter      the one writer: lock, claim the cache for an utterance table, commit groups
      -> lock               one writer per cache (<cache>.lock, flock; a second one stops naming the pid)
      -> journal.ShardStore finished batches of the extraction in progress, one crash-safe shard each
      -> groupfile          one group's file written from the journal, in blocks of rows, checksummed
      -> layout             the root file and its external links to <cache>.groups/<group>.<id>.h5
      -> atomic             every file lands by rename: a reader never sees half of one
      -> faults             full disk / read-only folder / no permission as one clear line

The read side::

    source.FeatureSource    what stage 2 reads, declared once (a Protocol), implemented by
      reader.FeatureCache   a cache file, every read checked against its checksum
      memory_cache          groups extracted in memory (prediction on new conversations)

Around them: ``schema`` (layout names, the default path, the records stage 1 hands over),
``verify`` (``erc cache verify``: every byte, counts, offsets, NaN/Inf) and ``merge``
(``erc cache merge``: the parts of a sharded extraction).
"""
