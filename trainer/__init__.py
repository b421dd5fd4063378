"""LoRA training (Unsloth on GPU, transformers+PEFT+TRL on CPU) and the before/after evaluator."""
