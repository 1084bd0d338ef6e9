"""Model code (PyTorch) and the data encodings the models need; domain core, no Dagster imports."""
