"""The model file and the models shipped: ``model_file`` (the format, its tensor names and
metadata, reading and writing), ``checks`` (what a file's contents must satisfy on every load and
save), ``domain`` (the training domain a model records: its coordinates and occupancy grid),
``registry`` (the shipped models and lookup by name or path), ``synthetic`` (random-weight
model files of the right shape, for sizing a machine and for tests) and ``precisions`` (the names
of the networks' precisions, without torch)."""
