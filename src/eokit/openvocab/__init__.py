"""Open-vocabulary segmentation: segment classes by name, including classes never trained on."""
