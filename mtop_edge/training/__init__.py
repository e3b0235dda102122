"""The training side: recipes, data augmentation, the Trainer loop and checkpoint averaging.

Heavy dependencies (torch, transformers) are imported inside functions, so reading a recipe
stays light.
"""
