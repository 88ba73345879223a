"""Stage 1: datasets -> encoders -> the HDF5 feature cache.

A map for a newcomer, in the order an ``erc extract`` runs::

    datasets/        a dataset on disk (IEMOCAP, MELD, a manifest, the demo) -> erc.corpus.Corpus
    preflight        layout and data checks before any encoding (missing media, doubtful labels)
    encoders/        text / audio / video encoders: one registry, name -> class + config
      media          one utterance's audio or video segment decoded (PyAV, soundfile)
    plan             length-sorted batches, their costs, and how they are shared among processes
    run              the loop: decode ahead on threads, encode, journal, commit; one function per
                     mode: extract_group (one process, or one --shard K/N part) and
                     extract_group_ranks (the ranks of torchrun, with dist)
    provenance       the attributes every cache group records (encoder, config hash, command)
    summary          the progress bar and the end-of-run table
    in_memory        the same batches into memory instead of a file (erc predict on new conversations)

Everything written goes through :mod:`erc.features` (the cache contract).
"""
