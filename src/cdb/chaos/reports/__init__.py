"""Reports of a run: the JSON journal, JUnit XML and the HTML page."""
