"""The qasr process: capture, VAD, workers, WebSocket server, hotkey, text output, CLI."""
