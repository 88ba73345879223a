"""The training options ``erc train-head`` and ``erc ablate`` share, defined once.

:class:`TrainOptions` lists each option with its default and help; :func:`with_options` adds them
to a command's signature (typer reads it) and hands the command one ``opts: TrainOptions``. Adding
a training flag is one field here (and, when it is a :class:`~erc.train.config.TrainConfig`
field, one line in :meth:`TrainOptions.train_config`).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, get_type_hints

import typer

from erc.config import parse_assignments
from erc.device import DEVICE_HELP

F = TypeVar("F", bound=Callable[..., Any])


def option(default: Any, *decls: str, help: str, **kw: Any) -> Any:  # noqa: A002 - typer's name
    """A dataclass field that is also a command-line option (``decls``: its flag names)."""
    return field(default=default, metadata={"decls": decls, "help": help, **kw})


@dataclass
class TrainOptions:
    """What a training command reads and how it trains; unset training values (None) fall back to
    the head's ``train_defaults``, then to :class:`~erc.train.config.TrainConfig`'s."""

    model: str = option(..., help="Head name (see `erc list heads`).")
    seeds: int = option(3, min=1, help="Number of seeds (0..N-1) per configuration; reported as mean ± std.")
    dataset: str = option("iemocap", help="Dataset name: reads features/<dataset>.h5.")
    features: Optional[Path] = option(None, help="Feature cache path (overrides --dataset).")
    modalities: Optional[str] = option(None, help="Modalities, e.g. t,a,v or text,audio (default: all in the cache).")
    encoders: Optional[str] = option(None, help="Encoder group per modality, e.g. text=minilm,audio=mel.")
    set_: Optional[list[str]] = option(None, "--set", help="Head config override key=value. Repeatable.")
    folds: Optional[str] = option(None, help="K-fold cross-validation instead of the cache's splits: a number of folds "
                                  "(at least 3: a test, a dev and a train fold), or 'session' (leave-one-session-out, "
                                  "IEMOCAP: 5 folds).")
    fold_grouping: str = option("dialogue", help="dialogue | utterance (pooled, DeepMSI-MER; leaks context) | session "
                                "(one fold per session).")
    epochs: Optional[int] = option(None, help="Max epochs (default: the head's, else 100).")
    batch_size: Optional[int] = option(None, help="Dialogues per batch (default: the head's, else 16).")
    lr: Optional[float] = option(None, help="AdamW learning rate (default: the head's, else 1e-4).")
    patience: Optional[int] = option(None, help="Early stopping on dev W-F1 (default 20; 0 = off).")
    class_weights: bool = option(False, "--class-weights", help="Inverse-frequency class weights.")
    threads: Optional[int] = option(None, help="CPU threads for torch (default: torch's; with --jobs, the cores "
                                    "shared out).")
    jobs: str = option("1", help="Runs trained at once, each in its own worker process: a number, or auto "
                       "(the GPUs where there are several, else half the cores).")
    max_frames: Optional[int] = option(None, help="Truncate frame sequences to this many frames.")
    deterministic: bool = option(False, "--deterministic", help="torch.use_deterministic_algorithms(True).")
    precision: str = option("fp32", help="fp32 | bf16 (autocast of the training forward; eval in fp32).")
    device: str = option("auto", help=DEVICE_HELP)
    quiet: bool = option(False, help="No progress bars.")
    overwrite: bool = option(False, "--overwrite", help="Replace a finished run of another configuration in a run folder.")

    @property
    def overrides(self) -> dict[str, str]:
        """``--set`` as key -> value (UserError on an item without ``=``)."""
        return parse_assignments(self.set_)

    @property
    def n_jobs(self) -> int:
        """``--jobs`` as a number of processes (UserError when it is neither a number nor auto)."""
        from erc.train.parallel import parse_jobs

        return parse_jobs(self.jobs)

    def train_config(self, head: type) -> Any:
        """The :class:`~erc.train.config.TrainConfig` of these options for ``head`` (its
        ``train_defaults`` fill what was not given), with the device checked on this machine.
        UserError on a bad value."""
        from erc.heads.cpu.build import check_cache as check_kernel_cache
        from erc.train.config import TrainConfig
        from erc.train.parallel import worker_threads

        threads = worker_threads(self.n_jobs, self.threads)
        cfg = TrainConfig.for_head(head, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                   patience=self.patience, class_weights=self.class_weights, max_frames=self.max_frames,
                                   deterministic=self.deterministic, device=self.device, quiet=self.quiet,
                                   precision=self.precision, num_threads=threads, overwrite=self.overwrite)
        cfg.torch_device()
        check_kernel_cache()  # a kernel folder others may write: one line now, not in the first forward pass
        return cfg

    def fold_plan(self) -> tuple[int | None, str]:
        """``--folds`` / ``--fold-grouping`` checked: (number of folds or None, grouping)."""
        from erc.train.folds import parse_folds

        return parse_folds(self.folds, self.fold_grouping)

    def data(self) -> Any:
        """The :class:`~erc.train.selection.DataChoice` these options name (reads the cache's index)."""
        from erc.train.selection import choose_data

        return choose_data(self.dataset, self.features, self.modalities, self.encoders)


def with_options(fn: F) -> F:
    """Give command ``fn`` (whose last parameter is ``opts: TrainOptions``) every
    :class:`TrainOptions` field as a keyword option; typer sees them in the signature (``--model``
    first, then ``fn``'s own options, then the other shared ones)."""
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in inspect.signature(fn).parameters.values()
           if p.name != "opts"]
    hints = get_type_hints(TrainOptions)
    shared = []
    for f in fields(TrainOptions):
        meta = dict(f.metadata)
        decls, help_ = meta.pop("decls"), meta.pop("help")
        default = f.default if f.default is not MISSING else ...
        shared.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name],
                                        default=typer.Option(default, *decls, help=help_, **meta)))
    names = [f.name for f in fields(TrainOptions)]

    @functools.wraps(fn)
    def command(**kwargs: Any) -> Any:
        opts = TrainOptions(**{k: kwargs.pop(k) for k in names})
        return fn(**kwargs, opts=opts)

    own_hints = {k: v for k, v in get_type_hints(fn).items() if k not in ("opts", "return")}
    # --help lists --model, then the command's own options, then the shared ones
    command.__signature__ = inspect.Signature([shared[0], *own, *shared[1:]])  # type: ignore[attr-defined]
    command.__annotations__ = {**own_hints, **hints}
    return command  # type: ignore[return-value]
