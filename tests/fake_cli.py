"""``python -m tests.fake_cli ARGS``: the erc command line with the test encoder ``fake`` (audio,
:class:`tests.fake_encoders.FakeAudioEncoder`) registered, so that a test controls exactly how many
bytes an extraction writes.

``ERC_TEST_ENOSPC_AFTER=<bytes>``: HDF5 dataset writes fail with ENOSPC once that many bytes were
written (for machines where a test cannot mount a small tmpfs to fill for real).
``ERC_TEST_NO_RESERVE=1``: a group file's space is not reserved first, as if another process had
taken it after the reservation, so a full disk stops HDF5 in the middle of its writes."""

from __future__ import annotations

import errno
import os
import sys

from erc.extract.encoders import ENCODERS, EncoderEntry

FAKE = EncoderEntry("fake", "audio", "test encoder", "tests.fake_encoders:FakeAudioEncoder", False)


def _faults_from_env() -> None:
    if os.environ.get("ERC_TEST_ENOSPC_AFTER"):
        import h5py

        budget = [int(os.environ["ERC_TEST_ENOSPC_AFTER"])]
        setitem = h5py.Dataset.__setitem__

        def full_disk(self, key, value):  # noqa: ANN001
            budget[0] -= getattr(value, "nbytes", 0)
            if budget[0] < 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return setitem(self, key, value)

        h5py.Dataset.__setitem__ = full_disk
    if os.environ.get("ERC_TEST_NO_RESERVE"):
        from erc.features import groupfile

        groupfile._reserve = lambda path, size: None


if __name__ == "__main__":
    from erc.cli import main

    ENCODERS["fake"] = FAKE
    _faults_from_env()
    main(sys.argv[1:])
