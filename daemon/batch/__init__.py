"""`qasr-daemon batch`: transcription of whole archives into files.

inputs (files, folders, globs, lists → files and where their outputs go) · manifest (`batch.jsonl`: what is
done, what failed) · work (one worker's warm model: one file → its outputs) · local_pool (worker processes) ·
ray_pool (Ray actors, optional) · sizing (workers and threads from cores and memory) · progress (bar or
lines, summary) · runner (the run: plan, schedule longest first, write, record).
"""
