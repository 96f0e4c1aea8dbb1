"""Measuring a model the same way for every variant: test metrics, the feature classifiers, sample grids."""
