"""Settings shared by the test modules: the profiles of the property-based (hypothesis) tests.

- ``ci`` (the default, also for the README's ``pytest``): derandomised — the same examples on
  every run and every machine, so a test run never fails on an example it did not try the time
  before — and at most 200 examples per test.
- ``full``: random examples, at least 1,000 per test, for a search before a release:
  ``HYPOTHESIS_PROFILE=full pytest -p no:cacheprovider tests -k property``.

Neither has a deadline: hypothesis's default fails an example that takes over 200 ms, a
wall-clock limit that a busy machine breaks.
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, max_examples=200, deadline=None,
                          database=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("full", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
