"""Property-based fuzzing of labops' input boundaries: the config loader and the parsers of
remote output. Each target may fail only with its documented error, one line per problem, fast."""
