"""The ground floor, what both tracks share: the params schema and the cell's geometry, the data,
the model and its trainer, the learning gate, the result schemas, and the atomic writes and paths
every artifact goes through. It imports nothing of the package above it."""
