"""The one trainer every variant uses, and the run that ``vaezoo train`` starts."""
