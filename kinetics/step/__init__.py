"""One chemistry step as tensor arithmetic: ``compiled_step`` (the TorchScript module every caller
runs, and its export), ``tables`` (its constant tables), ``thermo`` (NASA-7 in torch),
``forward`` (the networks' CPU forward pass and precision) and ``device`` (the device and CPU
threads it runs on)."""
