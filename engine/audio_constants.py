"""The audio format every part of qasr speaks: Qwen3-ASR's mel front-end at 16 kHz mono float32.

A checkpoint's own values are read into its bundle manifest (``bundle.AudioParams``); these are the
defaults and the format of the audio the daemon captures, segments and streams.
"""

SAMPLE_RATE = 16000  # Hz, mono
N_FFT = 400  # STFT window, samples (25 ms)
HOP_LENGTH = 160  # samples between mel frames (10 ms)
NUM_MEL_BINS = 128
CHUNK_FRAMES = 100  # mel frames per encoder front-end chunk (1 s)
WINDOW_TOKENS = 104  # encoder back-end attention window, in audio tokens (8 s)
