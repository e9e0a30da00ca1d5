"""The packaged conformance suite, applied to every built-in searcher (one fixture each)."""

import pytest

from miner.search.manual import ManualSearcher
from miner.testing.conformance import SearcherConformance, conformance_backend, conformance_data  # noqa: F401


class TestManual(SearcherConformance):
    @pytest.fixture
    def searcher(self):
        return ManualSearcher(with_calibration=True)
