"""Stage 2's orchestration; the models themselves are in :mod:`erc.heads`.

A map for a newcomer, in the order ``erc train-head`` runs::

    selection    which cache, dataset name and modality -> encoder group a command reads
    config       TrainConfig (optimisation, selection, precision, device) and a head's train_defaults
    dialogues    the cache's dialogues as padded torch batches (DialogueData); folds: splits and k-fold CV
    sweep        seeds x folds of one configuration, data read once; ablation: every variant of a head;
                 parallel: their runs on worker processes (--jobs)
    loop         one run: AdamW, dev-selected epoch, test scored once (finite: stops on NaN / Inf;
                 fits: refuses a head too large for memory before allocating it)
    runs         the run-folder protocol: identity, default folder names, lock, done / failed markers
    leaks        no test utterance scored whose label a fine-tuned encoder in use saw
    inference    the one inference path: probabilities (and representations) and the predictions table
    trained      a finished run read back; ensemble: a sweep's runs averaged (erc predict)
    predictions  scores and files of predictions; metrics, intervals, report: numbers and tables
    outputs      output locations checked before any work; progress: the progress bars
"""
