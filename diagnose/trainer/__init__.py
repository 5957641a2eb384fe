"""The built-in trainer: optimizers by name, regularizers, early stopping, k-fold, comparisons."""
