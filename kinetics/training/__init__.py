"""Training a model file from a dataset file: ``train`` (the configuration and the loop),
``data`` (rows, features and normalisation) and ``checkpoint`` (resumable training state)."""
