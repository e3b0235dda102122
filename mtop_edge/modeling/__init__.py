"""Model classes of our own and the PyTorch reference engine (training side: the modules import torch;
this package's own namespace does not)."""

ENCODER_POINTER_TYPE = "mtop-encoder-pointer"  # config.json's model_type of encoder-pointer checkpoints
