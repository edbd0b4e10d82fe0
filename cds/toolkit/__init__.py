"""The integration engineer's client toolkit: building and signing hook requests from fixture bundles,
sending them, replaying a folder of fixtures, moving fixture dates."""
