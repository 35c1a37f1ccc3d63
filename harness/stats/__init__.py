"""The statistics the tables print: paired tests and Holm (significance), flags (trivial, still improving),
expected validation performance. Pure numpy / pandas over run frames and saved predictions: below report, so
the tables, the board and `harness compare` all compute the same numbers."""

# Here, not in significance (numpy): `harness compare`'s parser reads them, and every command builds every parser.
RESAMPLES = 1000   # bootstrap resamples of a test, unless told (harness compare --resamples)
# the most `harness compare --resamples` takes: p-values to 1e-6, far finer than any test here needs; the time
# grows with resamples x dev examples (1e8 on 200 examples: over a minute; 1e20 never ended)
MAX_RESAMPLES = 1_000_000
