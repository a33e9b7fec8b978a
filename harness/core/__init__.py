"""The domain: scenarios, atomics, runs, detections, verdicts; imports nothing else from harness."""
