"""Input-method engines: separate processes that attach to the running daemon (they hold no model)."""
