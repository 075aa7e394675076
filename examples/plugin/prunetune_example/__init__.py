"""An example prunetune plug-in package: `methods` (row_half), `datasets` (rings) and `models`
(tiny_cnn), each registering itself when prunetune imports it through its entry point."""
