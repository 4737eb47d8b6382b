"""Helpers shared by the tests: the in-process app, the live server, the browser, files."""
