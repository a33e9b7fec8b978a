"""Running a scenario: configuration, safety, the executor."""
