"""Datasets: items of (image path, class index, domain index) from folders, CSVs or the world."""

from clipgauge.data.dataset import ImageDataset, Item

__all__ = ["ImageDataset", "Item"]
