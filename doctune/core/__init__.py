"""The ground floor: schemas, settings, errors, Zig facts, the shipped docs. It imports nothing of doctune above it."""

__version__ = "0.1.0"
