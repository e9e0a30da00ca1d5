"""Shared pytest configuration."""


def pytest_configure(config):
    # Slow tests use the real default model (conversion ~25-40 s); deselect with -m "not slow".
    config.addinivalue_line("markers", "slow: needs the real default model or is otherwise slow (deselect with -m 'not slow')")
