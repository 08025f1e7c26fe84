"""Wire types shared with ILStudio clients. `benchmark.base` is part of the pickle protocol."""
