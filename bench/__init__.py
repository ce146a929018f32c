"""edged's benchmarks: ``python -m bench [--quick] [--only SECTION]`` writes bench/RESULTS.md."""
