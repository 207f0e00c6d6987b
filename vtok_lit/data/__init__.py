"""Video reading, manifests, the built-in MotionShapes corpus and the one DataModule."""
