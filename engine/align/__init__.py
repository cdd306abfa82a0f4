"""Word timestamps with Qwen3-ForcedAligner: word split, the aligner model, timestamp repair."""
