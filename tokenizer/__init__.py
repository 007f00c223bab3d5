"""Tokenizers: the unified Vocabulary (every id range), the byte-level BPE text tokenizer, the VQ image tokenizer."""
