"""Pictures for `decembert visualize`: attention maps, training curves, task examples, video frames, HTML reports."""
