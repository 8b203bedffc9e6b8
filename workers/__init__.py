"""Worker-side engines: audio decoding, speech recognition, speaker diarization and the job pipeline."""
