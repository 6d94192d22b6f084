"""recbole-micro: multimedia recommenders (VBPR, LATTICE, MICRO) as a RecBole plugin."""

__version__ = "0.1.0"
