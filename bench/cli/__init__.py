"""One small module per console script; each exposes ``main(argv=None) -> int``."""
