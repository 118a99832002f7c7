"""Importing Marian / OPUS-MT checkpoints (Hugging Face folders)."""
