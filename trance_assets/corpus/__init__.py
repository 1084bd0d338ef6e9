"""The corpus: example table, augmentation, quality filter, splits, dataset card (domain core, no Dagster imports)."""
