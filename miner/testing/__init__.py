"""Test helpers shipped with the package: tiny models and the searcher conformance suite."""
