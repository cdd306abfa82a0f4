"""Pure computation: features, encoder, decoder, prompt, sessions. No I/O threads, sockets or devices."""
