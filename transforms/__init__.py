"""Feature definitions and preprocessing_fns that trainers import (TensorFlow only, no Beam)."""
