"""Data: tokenizer, masking, samples and their collation into encoder batches."""
