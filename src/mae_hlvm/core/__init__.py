"""What both tracks share: the typed params, the data, the model and its trainer, the learning gate,
the result schemas, and the atomic writes and paths every artifact goes through."""
