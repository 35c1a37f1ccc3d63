"""The statistics the tables print: paired tests and Holm (significance), flags (trivial, still improving),
expected validation performance. Pure numpy / pandas over run frames and saved predictions: below report, so
the tables, the board and `harness compare` all compute the same numbers."""
