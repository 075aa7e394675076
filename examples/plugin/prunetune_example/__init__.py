"""An example prunetune plug-in package: `methods` (row_half), `datasets` (rings), `models`
(tiny_cnn) and `scoring` (the jittered_magnitude scorer and the sqrt_budgets allocation), each
registering itself when prunetune imports it through its entry point."""
