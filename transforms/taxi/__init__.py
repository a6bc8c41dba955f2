"""Chicago taxi: feature groups and the preprocessing_fn (TensorFlow / TFT only, no Beam)."""
