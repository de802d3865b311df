"""extract-features: 2D/3D backbones and the extraction pipeline."""
