"""LoLa-DEFT device agent: fine-tunes its assigned LoRA block with PyTorch on local data."""

__version__ = "0.1.0"
