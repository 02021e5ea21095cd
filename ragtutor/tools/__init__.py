"""The repository's own tooling, which no chapter uses: the offline test harness (``testing``, the
pytest plugin; ``netguard``, the network guard, and ``netguard_site``, which installs it in every
Python process of a test run), the student-copy builder (``student``) and what the training
scripts and benchmarks share (``records``)."""
