"""recbole-micro: multimedia recommenders (MICRO, LATTICE, VBPR, MMGCN, GRCN) as a RecBole plugin."""

__version__ = "0.1.0"
