"""One run of a scenario: runner, scenario time, recording, undos, progress, the reaper."""
