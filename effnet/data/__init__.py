"""Input data: readers, preprocessing and augmentation."""
