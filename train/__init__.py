"""Training: the task suite, dataset building, sequence packing and the DeepSpeed trainer."""
