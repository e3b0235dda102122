"""Model classes of our own around the Hugging Face T5 stack (training side: imports torch)."""
