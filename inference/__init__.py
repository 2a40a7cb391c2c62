"""Inference pool (stem separation, transcription, mastering); arrives with its issue."""
