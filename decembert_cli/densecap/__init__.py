"""dense-caption: captioner backends (entry points `decembert.captioners`) and the captioning run."""
