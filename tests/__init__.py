"""The test suite (a regular package, so that a site-packages `tests` package, e.g. the one the
nfn wheel installs, cannot shadow it: `from tests.conftest import ...` always means this one)."""
