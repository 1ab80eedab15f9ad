"""The benchmarks: each module is one command, run from the repository root as
`python -m bench.<name>` (the README lists them); `bench.common` holds what they share."""
