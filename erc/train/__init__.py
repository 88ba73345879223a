"""Stage 2's orchestration: dialogues and folds (torch data from a feature cache), the training
loop, seeds x folds sweeps, run folders, metrics, reports and predictions. The models themselves
are in :mod:`erc.heads`."""
