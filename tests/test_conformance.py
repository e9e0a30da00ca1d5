"""The packaged conformance suite, applied to every built-in searcher (one fixture each)."""

import pytest

from miner.search.manual import ManualSearcher
from miner.testing.conformance import SearcherConformance


class TestManual(SearcherConformance):
    @pytest.fixture
    def searcher(self):
        return ManualSearcher(with_calibration=True)
